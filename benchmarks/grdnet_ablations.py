"""Issue 12's GRD-Net ablations on the procedural AOI benchmark: the ROI term and the adversarial term.

Arms (the same data, input size, epochs and seeds; each changes one setting of the shipped recipe):
  target          roi_mode target (the default): the U-Net's map is pushed to 0 outside the AOI, marks there too
  prediction      roi_mode prediction (the paper's eq. 5-6): the map outside the AOI gets no gradient
  none            no ROI term: a synthetic mark is a defect wherever it lies
  no_adversarial  roi_mode target with w_adv 0 (`--set grdnet.weights.adversarial=0`): does the GAN earn its cost?
Each arm-seed runs `onen train --config train/recipe_files/grdnet.yaml` (supervision none: the good training
images, synthetic defects inside the AOI and marks outside it) on one generated set (train.data.synth_benchmark,
seed 0, --count images at --size px), for --epochs. Its export is scored by `onen eval --bundle BUNDLE --data FRESH`
(ONNX Runtime) on fresh sets of other seeds (--fresh-seeds, every image held out): the share of good parts with
marks outside the AOI (and of plain good parts) called defective at the threshold reaching --recall on the fresh
defects, image AUROC and pixel AUROC; per arm-seed the mean over the fresh sets, per arm mean (min-max) over seeds.
Target: the target-masked arm's outside-mark false rejects <= 0.5x the no-ROI arm's.

The default budget is about 5 minutes per arm-seed on one core of this loaded machine: 600 images at 64 px (216
good training images), 10 epochs, Adam lr 1e-3 for every arm (10x the recipe's: at 128 px, 6 epochs and lr 1e-4 the
target arm reached an image AUROC of 0.52 on the fresh sets, chance). Runs and evaluations in --work are reused, so
a measurement can be resumed or extended by seeds.
Writes --work/grdnet_ablations.json, .md and .png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from onen.benchmarks.accuracy import _onen, _spread, _text, bundle, grdnet_recipe

ARMS: dict[str, tuple[list[str], str]] = {
    "target": (["--set", "grdnet.weights.roi_mode=target"], "ROI masks the target (default)"),
    "prediction": (["--set", "grdnet.weights.roi_mode=prediction"], "ROI masks the prediction (paper eq. 5-6)"),
    "none": (["--set", "grdnet.weights.roi_mode=none"], "no ROI term"),
    "no_adversarial": (["--set", "grdnet.weights.adversarial=0"], "ROI on the target, w_adv 0"),
}
RATIO_TARGET = 0.5  # target arm / none arm, outside-mark false rejects
FIGURES = ("false_reject_outside", "false_reject_plain", "image_auroc", "pixel_auroc")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--work", type=Path, default=Path("/tmp/onen-grdnet-ablations"), help="data, runs and reports go here"
    )
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma list of {', '.join(ARMS)}")
    parser.add_argument("--seeds", default="0,1", help="training seeds (the training images are the same)")
    parser.add_argument("--count", type=int, default=600, help="images of the generated training set (seed 0)")
    parser.add_argument("--size", type=int, default=64, help="image side and model input in px")
    parser.add_argument("--epochs", type=int, default=10, help="GRD-Net epochs, the same for every arm")
    parser.add_argument(
        "--lr",
        type=float,
        default=1e-3,
        help="Adam learning rate of every arm (the recipe's 1e-4 learns next to nothing in this budget)",
    )
    parser.add_argument("--fresh-seeds", default="1,2", help="seeds of the fresh held-out sets (not 0)")
    parser.add_argument("--fresh-count", type=int, default=500, help="images per fresh set")
    parser.add_argument(
        "--recall", type=float, default=0.95, help="recall on the fresh defects (one of train.metrics.RECALL_POINTS)"
    )


def _data(args) -> tuple[Path, dict[int, Path]]:
    """The training set and the fresh sets, generated once into --work."""
    from onen.train.data.synth_benchmark import generate

    train = args.work / "data" / f"train_seed0_c{args.count}_s{args.size}" / "manifest.csv"
    if not train.is_file():
        generate(train.parent, seed=0, count=args.count, size=args.size, progress=False)
    fresh = {}
    for seed in args.fresh:
        manifest = args.work / "data" / f"fresh_seed{seed}_c{args.fresh_count}_s{args.size}" / "manifest.csv"
        if not manifest.is_file():
            generate(
                manifest.parent,
                seed=seed,
                count=args.fresh_count,
                size=args.size,
                test_fraction=1.0,
                val_fraction=0.0,
                progress=False,
            )
        fresh[seed] = manifest
    return train, fresh


def _good_training_images(manifest: Path) -> int:
    import csv

    with open(manifest, newline="") as handle:
        return sum(row["split"] == "train" and row["label"] == "0" for row in csv.DictReader(handle))


def _budget(args) -> str:
    return f"c{args.count}-s{args.size}-e{args.epochs}-lr{args.lr:g}"


def train_arm(arm: str, seed: int, train: Path, args) -> Path:
    """`onen train` of one arm and seed (reused when finished, resumed when started)."""
    run = args.work / "runs" / _budget(args) / f"{arm}_seed{seed}"
    if not (run / "summary.json").is_file():
        command: list[object] = ["train", "--config", grdnet_recipe(), "--data", train, "--out", run, "--seed", seed]
        command += ["--size", args.size, "--epochs", args.epochs, "--lr", args.lr, *ARMS[arm][0]]
        if (run / "config.json").is_file():
            command.append("--resume")
        _onen(command)
    return run


def score_fresh(run: Path, seed: int, manifest: Path, recall: float) -> dict:
    """`onen eval --bundle` of the run's export on one fresh set; its figures at `recall` (onen eval's groups)."""
    out = run / f"eval-fresh-seed{seed}"
    if not (out / "report.json").is_file():
        _onen(["eval", "--bundle", bundle(run, "grdnet"), "--data", manifest, "--out", out])
    report = json.loads((out / "report.json").read_text())
    groups = report.get("groups") or {}
    if "good_outside" not in groups:
        raise SystemExit(f"{out / 'report.json'}: no good_outside group (is {manifest} a generated AOI benchmark?)")

    def rejected(kind: str) -> float | None:
        return groups[kind]["called_defective_at_recall"][str(recall)] if kind in groups else None

    return {
        "false_reject_outside": rejected("good_outside"),
        "false_reject_plain": rejected("good_plain"),
        "image_auroc": report["image_auroc"],
        "pixel_auroc": report["pixel_auroc"],
        "good_outside": groups["good_outside"]["images"],
        "defects": report["counts"]["defective"],
        "report": str(out / "report.json"),
    }


def measure_arm(arm: str, seed: int, train: Path, fresh: dict[int, Path], args) -> dict:
    run = train_arm(arm, seed, train, args)
    on_fresh = {s: score_fresh(run, s, manifest, args.recall) for s, manifest in fresh.items()}
    config = json.loads((run / "config.json").read_text())  # what the arm trained with, as resolved
    summary = json.loads((run / "summary.json").read_text())
    mean = {
        key: (sum(v[key] for v in on_fresh.values()) / len(on_fresh))
        if all(v[key] is not None for v in on_fresh.values())
        else None
        for key in FIGURES
    }
    return {
        "run": str(run),
        "roi_mode": config["grdnet"]["weights"]["roi_mode"],
        "adversarial": config["grdnet"]["weights"]["adversarial"],
        "train_s": summary.get("timings_s", {}).get("grdnet"),
        "discriminator_won_epochs": summary.get("discriminator_won_epochs"),
        "fresh": on_fresh,
        **mean,
    }


def summarise(per_arm: dict[str, dict[int, dict]]) -> dict[str, dict]:
    """Per arm: each figure's mean (min-max) over its seeds, and the outside-mark ratio to the no-ROI arm."""
    result: dict[str, dict] = {}
    for arm, seeds in per_arm.items():
        result[arm] = {key: _spread([row[key] for row in seeds.values()]) for key in (*FIGURES, "train_s")}
    reference = (result.get("none") or {}).get("false_reject_outside")
    for figures in result.values():
        own = figures["false_reject_outside"]
        figures["ratio_to_none"] = own["mean"] / reference["mean"] if own and reference and reference["mean"] else None
    return result


def table(summary: dict[str, dict], recall: float) -> list[str]:
    lines = [
        f"| arm | seeds | good, marks outside AOI: false rejects @ recall {recall} | ratio to no ROI | plain good: "
        f"false rejects | image AUROC | pixel AUROC | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm, figures in summary.items():
        seeds = (figures["image_auroc"] or {}).get("seeds", 0)
        ratio = figures["ratio_to_none"]
        lines.append(
            f"| {arm} ({ARMS[arm][1]}) | {seeds} | {_text(figures['false_reject_outside'])} | "
            f"{'-' if ratio is None else f'{ratio:.2f}'} | {_text(figures['false_reject_plain'])} | "
            f"{_text(figures['image_auroc'])} | {_text(figures['pixel_auroc'])} | {_text(figures['train_s'])} |"
        )
    return lines


def plot(path: Path, per_arm: dict[str, dict[int, dict]], recall: float) -> None:
    """Outside-mark false rejects per arm, one dot per seed, the bar at their mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    for index, seeds in enumerate(per_arm.values()):
        values = [row["false_reject_outside"] for row in seeds.values() if row["false_reject_outside"] is not None]
        if values:
            axis.bar(index, sum(values) / len(values), color="#9ab", width=0.6)
            axis.scatter([index] * len(values), values, color="#234", zorder=3, s=14)
    axis.set_xticks(range(len(per_arm)), list(per_arm))
    axis.set_ylabel(f"good parts, marks outside AOI:\nshare rejected at recall {recall}")
    axis.set_title("GRD-Net on the AOI benchmark (fresh sets)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(args: argparse.Namespace) -> int:
    from onen.train.metrics import RECALL_POINTS

    if args.recall not in RECALL_POINTS:
        raise SystemExit(f"--recall {args.recall}: onen eval reports {', '.join(map(str, RECALL_POINTS))}")
    arms = [a for a in args.arms.split(",") if a]
    if not arms or any(a not in ARMS for a in arms):
        raise SystemExit(f"--arms {args.arms}: choose from {', '.join(ARMS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    args.fresh = [int(s) for s in args.fresh_seeds.split(",") if s]
    if not args.fresh or 0 in args.fresh:
        raise SystemExit(f"--fresh-seeds {args.fresh_seeds}: give seeds other than 0 (the training set's)")
    args.work.mkdir(parents=True, exist_ok=True)
    train, fresh = _data(args)
    per_arm: dict[str, dict[int, dict]] = {arm: {} for arm in arms}
    for seed in seeds:  # seed by seed, so an interrupted measurement leaves every arm with as many seeds
        for arm in arms:
            per_arm[arm][seed] = measure_arm(arm, seed, train, fresh, args)
            row = per_arm[arm][seed]
            print(
                f"[{arm} seed {seed}] outside-mark false rejects {row['false_reject_outside']}, plain "
                f"{row['false_reject_plain']}, image AUROC {row['image_auroc']}, pixel AUROC {row['pixel_auroc']}, "
                f"trained in {row['train_s']} s"
            )
    summary = summarise(per_arm)
    lines = table(summary, args.recall)
    budget = (
        f"{args.count} generated images at {args.size} px (seed 0; {_good_training_images(train)} good training "
        f"images), {args.epochs} epochs, lr {args.lr:g} per arm-seed; fresh sets of seeds "
        f"{', '.join(map(str, args.fresh))} ({args.fresh_count} images each); seeds {', '.join(map(str, seeds))}"
    )
    print(budget)
    print("\n".join(lines))
    results = {
        "budget": {
            "count": args.count,
            "size": args.size,
            "epochs": args.epochs,
            "lr": args.lr,
            "fresh_seeds": args.fresh,
            "fresh_count": args.fresh_count,
            "recall": args.recall,
            "seeds": seeds,
        },
        "ratio_target": RATIO_TARGET,
        "arms": {arm: {"flags": ARMS[arm][0], "seeds": per_arm[arm], "summary": summary[arm]} for arm in arms},
    }
    (args.work / "grdnet_ablations.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    header = ["# onen bench grdnet-ablations", "", f"- {budget}", f"- target: ratio <= {RATIO_TARGET}", ""]
    (args.work / "grdnet_ablations.md").write_text("\n".join(header + lines) + "\n")
    plot(args.work / "grdnet_ablations.png", per_arm, args.recall)
    print(f"wrote {args.work / 'grdnet_ablations.json'}, .md and .png")
    if getattr(args, "json", None):
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0
