"""Issue 11's and 12's accuracy targets on two real sets (ELPV, magnetic tile) with `onen train` defaults, over seeds.

For each set (benchmarks.real_sets: one fixed stratified split, its fingerprint printed), family, supervision and
seed, it trains on the manifest's train + val rows: OneN with `onen train --data MANIFEST --supervision S --out RUN
--seed N` (the defaults: no per-set flag), GRD-Net (`--family grdnet`, supervision none only) with the shipped
recipe, `onen train --config train/recipe_files/grdnet.yaml --data MANIFEST --out RUN --seed N`, into
RUNS/{set}_none_seed{N}_grdnet. Every model is exported and scored by `onen eval --run RUN --bundle BUNDLE` (ONNX
Runtime, the same scoring for both families) on the test rows, at the thresholds the run chose on validation:
image AUROC, pixel AUROC, AUPRO, and per defect type its image AUROC against the good parts and its recall.
GRD-Net has no teacher (its teacher column stays empty). Finished runs, bundles and evaluations in --work are
reused and a started run is resumed, so a long measurement can be resumed.

Targets: ELPV weak accuracy >= 0.92 and image AUROC >= 0.95, none image AUROC reported; magnetic tile full
image / pixel AUROC 0.98 / 0.95 and class accuracy 0.90, plus recall >= 0.95 of the test defects while rejecting
<= 2 % of the good parts at the run's own threshold (every miss listed), weak 0.95 / 0.85, none 0.85; the exported
student >= 2x faster than the teacher in ONNX Runtime (batch 1, one thread, interleaved, median) at the geometry
the run used; GRD-Net on magnetic tile image / pixel AUROC 0.90 / 0.85 and a pixel AUROC above the OneN `none`
student's of the same seed, its export timed beside that student and teacher. A target is met when every seed
meets it. Figures: mean (min-max) over the seeds, the model (OneN student or GRD-Net) beside the teacher, in the
printed table and in --work/accuracy.json and accuracy.md.

--epochs, --teacher-epochs and --limit make a smoke run (bench-only, NOT the measurement): its runs and reports
carry a `smoke` name and are never mixed with the measured ones.
"""

from __future__ import annotations

import argparse
import csv
import json
import operator
from pathlib import Path

import numpy as np

from onen.benchmarks.real_sets import SETS, split_set, write_manifest
from onen.benchmarks.train_targets import DEFAULT_DATA, median_latency
from onen.train.repeatability import NOISE_SIGMAS

DEFAULT_ELPV = Path(__file__).resolve().parents[2] / "datasets" / "elpv" / "elpv_dataset" / "data"
SUPERVISIONS = {"elpv": ("weak", "none"), "mt": ("full", "weak", "none")}
SET_TITLES = {"elpv": "ELPV", "mt": "magnetic tile"}
# (figure of onen eval's report.json, comparison, bound); an empty list: the figures are reported, no target
TARGETS: dict[tuple[str, str], list[tuple[str, str, float]]] = {
    ("elpv", "weak"): [("accuracy", ">=", 0.92), ("image_auroc", ">=", 0.95)],
    ("elpv", "none"): [],
    ("mt", "full"): [
        ("image_auroc", ">=", 0.98),
        ("pixel_auroc", ">=", 0.95),
        ("class_accuracy", ">=", 0.90),
        ("recall", ">=", 0.95),
        ("false_reject_rate", "<=", 0.02),
    ],
    ("mt", "weak"): [("image_auroc", ">=", 0.95), ("pixel_auroc", ">=", 0.85)],
    ("mt", "none"): [("image_auroc", ">=", 0.85)],
}
FAMILIES = ("onen", "grdnet")
GRDNET_SUPERVISIONS = ("none",)  # GRD-Net learns from good images and synthetic defects only
GRDNET_TARGETS: dict[tuple[str, str], list[tuple[str, str, float]]] = {
    ("elpv", "none"): [],
    ("mt", "none"): [("image_auroc", ">=", 0.90), ("pixel_auroc", ">=", 0.85)],
}
MODEL = {"onen": "student", "grdnet": "grdnet"}  # the bundle each family's run exports (beside OneN's teacher)
COMPARISONS = {">=": operator.ge, "<=": operator.le, ">": operator.gt}
REPORTED = ("image_auroc", "pixel_auroc", "aupro", "accuracy", "class_accuracy", "recall", "false_reject_rate")
# train.repeatability: the share of verdicts that flip when the test images get sensor-like noise (eval reports
# written before it lack the figure: left empty, not re-run)
REPEATABILITY = {f"flip_rate_noise_sigma_{sigma:g}": f"sigma_{sigma:g}" for sigma in NOISE_SIGMAS}
SPEEDUP_TARGET = 2.0
AT_THRESHOLD = ("recall", "false_reject_rate", "accuracy")
# onen eval's threshold_source for a run's own validation threshold ("given": the eval before issue 11's wording)
VALIDATION_SOURCES = ("validation", "given")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work", type=Path, required=True, help="manifests, runs and reports go here (not the repo)")
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma list of {', '.join(SETS)}")
    parser.add_argument(
        "--family",
        default="onen",
        help="comma list of model families: onen (teacher + student), grdnet (GRD-Net, supervision none, the shipped "
        "recipe); with onen,grdnet the GRD-Net export is timed beside the OneN student and teacher",
    )
    parser.add_argument("--seeds", default="0,1", help="training seeds (the split is fixed whatever the seed)")
    parser.add_argument(
        "--supervision",
        default="full,weak,none",
        help="supervision levels to run where the set has them (ELPV: weak, none; magnetic tile: full, weak, none)",
    )
    parser.add_argument("--elpv-data", type=Path, default=DEFAULT_ELPV, help="ELPV folder (images/, labels.csv)")
    parser.add_argument("--mt-data", type=Path, default=DEFAULT_DATA, help="magnetic tile folder (MT_*/Imgs)")
    parser.add_argument("--repeats", type=int, default=200, help="latency: timed calls per model")
    parser.add_argument(
        "--recipe",
        help="a shipped recipe (train/recipe_files, e.g. repeatable) the OneN runs train with instead of the defaults; "
        "their runs and reports get its name",
    )
    smoke = parser.add_argument_group("smoke run (checks the bench end to end; NOT the measurement)")
    smoke.add_argument("--epochs", type=int, help="student (or GRD-Net) epochs instead of onen train's default")
    smoke.add_argument("--teacher-epochs", type=int, help="teacher epochs instead of onen train's default")
    smoke.add_argument("--limit", type=int, help="about this many images per split, stratified")


def _smoke_tag(args) -> str:
    parts = [
        f"{flag}{value}"
        for flag, value in (("e", args.epochs), ("t", args.teacher_epochs), ("l", args.limit))
        if value is not None
    ]
    return "smoke-" + "-".join(parts) if parts else ""


def _onen(command: list[object]) -> None:
    from onen.edge.cli import main as onen

    if onen([str(c) for c in command]) != 0:
        raise SystemExit(f"onen {' '.join(str(c) for c in command)} failed")


def grdnet_recipe() -> Path:
    """The GRD-Net recipe the project ships (train/recipe_files/grdnet.yaml); imported late: `onen bench` lists this
    module on a station without the [train] extra."""
    from onen.train.config_file import shipped_recipes

    return shipped_recipes()["grdnet"]


def run_dir(args, set_name: str, supervision: str, seed: int, family: str, tag: str) -> Path:
    """RUNS/{set}_{supervision}_seed{N}[_grdnet][_RECIPE][_smoke-...]."""
    recipe = args.recipe if family == "onen" and getattr(args, "recipe", None) else ""
    parts = (set_name, supervision, f"seed{seed}", "grdnet" if family == "grdnet" else "", recipe, tag)
    return args.work / "runs" / "_".join(p for p in parts if p)


def train_run(run: Path, manifest: Path, supervision: str, seed: int, args, family: str = "onen") -> Path:
    """`onen train` with its defaults (smoke flags aside; GRD-Net: its shipped recipe) into `run`; a finished run is
    reused, a started one resumed (like train_targets.train_run)."""
    if (run / "summary.json").is_file():
        print(f"[{run.name}] reusing {run}")
        return run
    if family == "grdnet":
        command: list[object] = ["train", "--config", grdnet_recipe(), "--data", manifest, "--out", run, "--seed", seed]
    else:
        command = ["train", "--data", manifest, "--supervision", supervision, "--out", run, "--seed", seed]
        if getattr(args, "recipe", None):
            from onen.train.config_file import shipped_recipes

            command += ["--config", shipped_recipes()[args.recipe]]
    if args.epochs is not None:
        command += ["--epochs", args.epochs]
    if args.teacher_epochs is not None and family == "onen":
        command += ["--teacher-epochs", args.teacher_epochs]
    if (run / "config.json").is_file():
        command.append("--resume")
    _onen(command)
    return run


def _check_test_rows(run: Path, manifest: Path) -> None:
    """The run's test split is the manifest's test rows (the trainer keeps a source's split)."""
    with open(manifest, newline="") as handle:
        wanted = {row["image"] for row in csv.DictReader(handle) if row["split"] == "test"}
    used = set(json.loads((run / "splits.json").read_text())["test"])
    if used != wanted:
        raise SystemExit(f"{run}: the run's test split ({len(used)} images) is not {manifest}'s test rows")


def has_teacher(run: Path) -> bool:
    return (run / "teacher" / "teacher.pt").is_file()


def bundle(run: Path, model: str) -> Path:
    """RUN/bundles/MODEL: the run's export of `model` (student, teacher or grdnet), exported once."""
    from onen.edge.bundle import MANIFEST
    from onen.train.export import export_run

    folder = run / "bundles" / model
    if not (folder / MANIFEST).is_file():
        export_run(run, folder, teacher=model == "teacher", force=True)
    return folder


def eval_dir(run: Path, model: str) -> Path:
    return run / f"eval-bundle-{model}"


def eval_bundle(run: Path, model: str) -> dict:
    """`onen eval --run RUN --bundle RUN/bundles/MODEL`: the export in ONNX Runtime on the run's test split, at the
    threshold the run chose on validation (cached in RUN/eval-bundle-MODEL)."""
    out = eval_dir(run, model)
    if not (out / "report.json").is_file():
        _onen(["eval", "--run", run, "--bundle", bundle(run, model), "--out", out])
    return json.loads((out / "report.json").read_text())


def misses(folder: Path, report: dict) -> dict:
    """Every test defect scored below the image threshold the eval in `folder` used, and every good part at or
    above it."""
    threshold = report.get("threshold")
    if threshold is None:
        return {"missed": [], "false_rejects": []}
    with open(folder / "scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))

    def listed(label: str, missed: bool) -> list[dict]:
        chosen = [r for r in rows if r["label"] == label and (float(r["score"]) < threshold) == missed]
        return [{"image": r["image"], "class": r["class"], "score": float(r["score"])} for r in chosen]

    return {"missed": listed("1", True), "false_rejects": listed("0", False)}


def per_defect_type(folder: Path, threshold: float | None) -> dict[str, dict]:
    """Per defect type of the eval in `folder` (its scores.csv): images, image AUROC of that type against all good
    parts, and recall at the eval's threshold."""
    from onen.train.metrics import image_auroc

    with open(folder / "scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    scores = np.array([float(r["score"]) for r in rows])
    labels = np.array([int(r["label"]) for r in rows])
    kinds = np.array([r["class"] for r in rows])
    result = {}
    for kind in sorted(set(kinds[labels == 1].tolist())):
        chosen = (kinds == kind) & (labels == 1)
        pool = chosen | (labels == 0)
        result[kind] = {
            "images": int(chosen.sum()),
            "image_auroc": image_auroc(labels[pool], scores[pool]),
            "recall": float((scores[chosen] >= threshold).mean()) if threshold is not None else None,
        }
    return result


def latency(models: dict[str, Path], repeats: int) -> dict:
    """Batch-1 ONNX Runtime medians of the given bundles (name -> folder), timed interleaved, each at its own input
    geometry; with a student and a teacher, the teacher's time over the student's."""
    from onen.edge.bundle import load_bundle

    manifests = {name: load_bundle(folder).manifest for name, folder in models.items()}
    geometries = [(m.input_height, m.input_width) for m in manifests.values()]
    times = median_latency([folder / "model.onnx" for folder in models.values()], geometries, repeats)
    result: dict = {
        "models": {
            name: {"ms_median": ms, "input": {"height": height, "width": width}}
            for (name, ms), (height, width) in zip(zip(models, times, strict=True), geometries, strict=True)
        }
    }
    if {"student", "teacher"} <= set(models):
        result["speedup"] = result["models"]["teacher"]["ms_median"] / result["models"]["student"]["ms_median"]
    return result


def _latency_models(run: Path, family: str, beside: Path | None) -> dict[str, Path]:
    """What to time: OneN's student and teacher; GRD-Net's export, with the student and teacher of a OneN run of
    the same set (`beside`) when this invocation measured one."""
    models = {MODEL[family]: bundle(run, MODEL[family])}
    onen_run = run if family == "onen" else beside
    if onen_run is not None and has_teacher(onen_run):
        models |= {"student": bundle(onen_run, "student"), "teacher": bundle(onen_run, "teacher")}
    return models


def _timing(run: Path, family: str = "onen") -> dict:
    """Training time of the run: the model's (student or GRD-Net) and the teacher's phase per epoch, and in all."""
    config = json.loads((run / "config.json").read_text())
    splits = json.loads((run / "splits.json").read_text())
    timings = json.loads((run / "summary.json").read_text()).get("timings_s", {})
    model = MODEL[family]
    epochs = config.get("epochs")
    teacher_epochs = config.get("teacher_epochs") if family == "onen" else None
    return {
        "train_images": len(splits["train"]),
        "val_images": len(splits["val"]),
        "epochs": epochs,
        "teacher_epochs": teacher_epochs,
        "size": config.get("size"),
        "geometry": config.get("geometry"),  # the resolved input and why (runs since `--size auto`)
        **{f"{k}_s": v for k, v in timings.items()},
        "model_s_per_epoch": timings[model] / epochs if epochs and model in timings else None,
        "teacher_s_per_epoch": timings["teacher"] / teacher_epochs if teacher_epochs and "teacher" in timings else None,
    }


def _spread(values: list) -> dict | None:
    known = [float(v) for v in values if v is not None]
    if not known:
        return None
    return {"mean": sum(known) / len(known), "min": min(known), "max": max(known), "seeds": len(known)}


def _met(values: list, comparison: str, bound: float) -> str:
    if not values or any(v is None for v in values):
        return "no figure"
    meets = COMPARISONS[comparison]
    mean_meets = meets(sum(values) / len(values), bound)
    return "met" if all(meets(v, bound) for v in values) else ("mean only" if mean_meets else "NOT met")


def _verdict(key: str, values: list, target: tuple[str, float] | None, validated: bool) -> str | None:
    """A figure taken at the image threshold counts only where that threshold came from validation."""
    if target is None:
        return None
    if key in AT_THRESHOLD and not validated:
        return "no validation threshold"
    return _met(values, *target)


def _text(spread: dict | None) -> str:
    if spread is None:
        return "-"
    if spread["seeds"] == 1 or spread["min"] == spread["max"]:
        return f"{spread['mean']:.3f}"
    return f"{spread['mean']:.3f} ({spread['min']:.3f}-{spread['max']:.3f})"


def _figures(report: dict) -> dict:
    """The figures of one `onen eval` report the bench tabulates."""
    noise = report.get("repeatability") or {}
    flips = {key: (noise.get(level) or {}).get("flip_rate") for key, level in REPEATABILITY.items()}
    return {**{key: report.get(key) for key in REPORTED}, **flips}


def _row(figure: str, target: str | None, model: dict | None, teacher: dict | None, met: str | None) -> dict:
    return {"figure": figure, "target": target, "student": model, "teacher": teacher, "met": met}


def measure(
    set_name: str, supervision: str, manifest: Path, seeds: list[int], tag: str, args, family: str = "onen", **extra
) -> dict:
    """Train, evaluate (the exports, in ONNX Runtime) and time one set under one family and supervision over the
    seeds; figures per seed and summed up. `extra["beside"]`: the OneN run whose student and teacher the GRD-Net
    export is timed with; `extra["onen_pixel"]`: that set's OneN `none` student pixel AUROC per seed."""
    per_seed = {}
    model = MODEL[family]
    for seed in seeds:
        run = run_dir(args, set_name, supervision, seed, family, tag)
        train_run(run, manifest, supervision, seed, args, family)
        _check_test_rows(run, manifest)
        own = eval_bundle(run, model)
        teacher = eval_bundle(run, "teacher") if family == "onen" and has_teacher(run) else None
        per_seed[seed] = {
            "run": str(run),
            "student": _figures(own),
            "teacher": _figures(teacher) if teacher else None,
            "per_defect_type": per_defect_type(eval_dir(run, model), own.get("threshold")),
            "threshold": own.get("threshold"),
            "threshold_source": own.get("threshold_source"),
            "teacher_threshold_source": teacher.get("threshold_source") if teacher else None,
            "input": own.get("input"),
            "counts": own.get("counts"),
            "timing": _timing(run, family),
            **misses(eval_dir(run, model), own),
        }
    first_run = Path(per_seed[seeds[0]]["run"])
    speed = latency(_latency_models(first_run, family, extra.get("beside")), args.repeats)
    figures = []
    # recall and false rejects count only at the threshold the run chose on validation
    validated = all(per_seed[s]["threshold_source"] in VALIDATION_SOURCES for s in seeds)
    table_of = GRDNET_TARGETS if family == "grdnet" else TARGETS
    targets = {key: (comparison, bound) for key, comparison, bound in table_of[(set_name, supervision)]}
    for key in (*REPORTED, *REPEATABILITY):
        student_values = [per_seed[s]["student"][key] for s in seeds]
        teacher_values = [per_seed[s]["teacher"][key] if per_seed[s]["teacher"] else None for s in seeds]
        if key not in targets and all(v is None for v in student_values):
            continue
        target = targets.get(key)
        figures.append(
            _row(
                key,
                f"{target[0]} {target[1]}" if target else None,
                _spread(student_values),
                _spread(teacher_values),
                _verdict(key, student_values, target, validated),
            )
        )
    onen_pixel = extra.get("onen_pixel") or {}
    paired = [s for s in seeds if onen_pixel.get(s) is not None and per_seed[s]["student"]["pixel_auroc"] is not None]
    if family == "grdnet" and paired:
        gains = [per_seed[s]["student"]["pixel_auroc"] - onen_pixel[s] for s in paired]
        figures.append(
            _row(
                "pixel_auroc minus the OneN none student's (same seed)",
                "> 0",
                _spread(gains),
                None,
                _met(gains, ">", 0.0),
            )
        )
    models = speed["models"]
    own_speed = models[model]
    size = f"{own_speed['input']['height']}x{own_speed['input']['width']}"
    teacher_ms = models["teacher"]["ms_median"] if family == "onen" and "teacher" in models else None
    figures.append(
        _row(f"onnx_ms_batch1_1thread_{size}", None, _spread([own_speed["ms_median"]]), _spread([teacher_ms]), None)
    )
    if family == "onen" and "speedup" in speed:
        figures.append(
            _row(
                "speedup_teacher_over_student",
                f">= {SPEEDUP_TARGET}",
                _spread([speed["speedup"]]),
                None,
                _met([speed["speedup"]], ">=", SPEEDUP_TARGET),
            )
        )
    if family == "grdnet" and "student" in models:
        onen_size = f"{models['student']['input']['height']}x{models['student']['input']['width']}"
        figures.append(
            _row(
                f"beside it (timed together): OneN student / teacher onnx_ms_batch1_1thread_{onen_size}",
                None,
                _spread([models["student"]["ms_median"]]),
                _spread([models["teacher"]["ms_median"]]),
                None,
            )
        )
    timings = [per_seed[s]["timing"] for s in seeds]
    figures.append(
        _row(
            "training_s_per_epoch (phase time / epochs)",
            None,
            _spread([t.get("model_s_per_epoch") for t in timings]),
            _spread([t.get("teacher_s_per_epoch") for t in timings]),
            None,
        )
    )
    total_min = [t["total_s"] / 60 if t.get("total_s") is not None else None for t in timings]
    figures.append(_row("training_min_per_run (all phases)", None, _spread(total_min), None, None))
    return {
        "set": set_name,
        "family": family,
        "supervision": supervision,
        "seeds": per_seed,
        "latency": speed,
        "figures": figures,
    }


FAMILY_TITLES = {"onen": "OneN", "grdnet": "GRD-Net"}


def table(results: dict) -> list[str]:
    """Markdown table: one line per set, family, supervision and figure, the model beside the teacher."""
    lines = [
        "| set | family | supervision | figure | target | model (student / GRD-Net) | teacher | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for entry in results["measurements"]:
        for figure in entry["figures"]:
            lines.append(
                f"| {SET_TITLES[entry['set']]} | {FAMILY_TITLES[entry.get('family', 'onen')]} | "
                f"{entry['supervision']} | {figure['figure']} | {figure['target'] or '-'} | "
                f"{_text(figure['student'])} | {_text(figure['teacher'])} | {figure['met'] or '-'} |"
            )
    return lines


def _defect_type_lines(row: dict) -> list[str]:
    def shown(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    return [
        f"  - {kind}: {facts['images']} test images, image AUROC vs the good parts {shown(facts['image_auroc'])}, "
        f"recall {shown(facts['recall'])}"
        for kind, facts in row.get("per_defect_type", {}).items()
    ]


def _run_lines(results: dict) -> list[str]:
    """Per run: input geometry, where its thresholds came from, its figures per defect type; for magnetic tile full
    every missed defect."""
    lines = []
    for entry in results["measurements"]:
        family = entry.get("family", "onen")
        for seed, row in entry["seeds"].items():
            where = f"{SET_TITLES[entry['set']]} {FAMILY_TITLES[family]} {entry['supervision']}, seed {seed}"
            size = f"{row['input']['height']}x{row['input']['width']}" if row.get("input") else "?"
            geometry = row["timing"].get("geometry") or {}
            if geometry.get("chosen_by"):
                size += f" ({geometry['chosen_by']}: {geometry.get('reason', {}).get('summary', 'as given')})"
            teacher = f", teacher's ({row['teacher_threshold_source']})" if row.get("teacher") else ""
            lines.append(
                f"- {where}: input {size}, {row['timing']['train_images']} train + {row['timing']['val_images']} val "
                f"images; {MODEL[family]} threshold {row['threshold']} ({row['threshold_source']}){teacher}; "
                f"{len(row['missed'])} test defects missed, {len(row['false_rejects'])} good parts rejected"
            )
            lines += _defect_type_lines(row)
            if (family, entry["set"], entry["supervision"]) == ("onen", "mt", "full"):
                lines += [f"  - missed {m['image']} [{m['class']}] score {m['score']:.4f}" for m in row["missed"]]
    return lines


def _families(text: str) -> list[str]:
    families = [f for f in text.split(",") if f]
    if not families or any(f not in FAMILIES for f in families):
        raise SystemExit(f"--family {text}: choose from {', '.join(FAMILIES)}")
    return sorted(families, key=FAMILIES.index)  # OneN first: GRD-Net is timed and compared beside it


def main(args: argparse.Namespace) -> int:
    sets = [s for s in args.sets.split(",") if s]
    unknown = [s for s in sets if s not in SETS]
    if unknown:
        raise SystemExit(f"unknown set(s) {unknown}; choose from {', '.join(SETS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    wanted = [s for s in args.supervision.split(",") if s]
    levels = sorted({level for levels in SUPERVISIONS.values() for level in levels})
    if not wanted or any(s not in levels for s in wanted):
        raise SystemExit(f"--supervision {args.supervision}: choose from {', '.join(levels)}")
    families = _families(args.family)
    if families == ["grdnet"] and not set(wanted) & set(GRDNET_SUPERVISIONS):
        raise SystemExit(f"--family grdnet trains with supervision {'/'.join(GRDNET_SUPERVISIONS)} only")
    if args.recipe:
        from onen.train.config_file import shipped_recipes

        if args.recipe not in shipped_recipes() or "onen" not in families:
            known = ", ".join(shipped_recipes())
            raise SystemExit(f"--recipe {args.recipe}: expected one of {known}, for the OneN family's runs")
    tag = _smoke_tag(args)
    if tag:
        print(f"SMOKE RUN ({tag}): checks the bench end to end; these figures are NOT the measurement")
    args.work.mkdir(parents=True, exist_ok=True)
    roots = {"elpv": args.elpv_data, "mt": args.mt_data}
    results: dict = {
        "smoke": tag or None,
        "recipe": args.recipe,
        "seeds": seeds,
        "families": families,
        "sets": {},
        "measurements": [],
    }
    for set_name in sets:
        split = split_set(set_name, roots[set_name], args.limit)
        manifest = write_manifest(
            split, args.work / "sets" / set_name / (f"manifest-{tag}.csv" if tag else "manifest.csv")
        )
        pinned = split.pinned() if args.limit is None else None
        verdict = (
            "matches the pinned split"
            if pinned == split.fingerprint
            else "a --limit subset"
            if args.limit is not None
            else f"DIFFERS from the pinned split {pinned}: these figures are not comparable"
        )
        print(f"{SET_TITLES[set_name]}: split {split.fingerprint} ({verdict}), {split.counts()}, manifest {manifest}")
        results["sets"][set_name] = {
            "root": str(split.root),
            "manifest": str(manifest),
            "fingerprint": split.fingerprint,
            "pinned": pinned,
            "verdict": verdict,
            "counts": split.counts(),
        }
        skipped = [s for s in wanted if s not in SUPERVISIONS[set_name]]
        if skipped:
            print(f"{SET_TITLES[set_name]} has no {'/'.join(skipped)} (labels only: no pixel masks); skipped")
        onen: list[dict] = []
        for family in families:
            allowed = GRDNET_SUPERVISIONS if family == "grdnet" else SUPERVISIONS[set_name]
            for supervision in [s for s in allowed if s in wanted]:
                nearest = sorted(onen, key=lambda e: e["supervision"] != "none")  # the OneN none run when measured
                beside = {
                    "beside": Path(nearest[0]["seeds"][seeds[0]]["run"]) if nearest else None,
                    "onen_pixel": {
                        seed: row["student"]["pixel_auroc"]
                        for entry in onen
                        if entry["supervision"] == "none"
                        for seed, row in entry["seeds"].items()
                    },
                }
                entry = measure(set_name, supervision, manifest, seeds, tag, args, family, **beside)
                results["measurements"].append(entry)
                if family == "onen":
                    onen.append(entry)
    lines = table(results)
    misses_text = _run_lines(results)
    print("\n".join(lines))
    if misses_text:
        print("\n".join(misses_text))
    name = "-".join(p for p in ("accuracy", args.recipe, tag) if p)
    (args.work / f"{name}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    header = [f"# onen bench accuracy{' (SMOKE RUN: not the measurement)' if tag else ''}", ""]
    header += [f"- {SET_TITLES[k]}: split `{v['fingerprint']}` ({v['verdict']})" for k, v in results["sets"].items()]
    header += [f"- OneN runs trained with the recipe `{args.recipe}`"] if args.recipe else []
    header += [f"- seeds {', '.join(map(str, seeds))}; figures are mean (min-max) over the seeds", ""]
    md_misses = ["", *misses_text] if misses_text else []
    (args.work / f"{name}.md").write_text("\n".join(header + lines + md_misses) + "\n")
    print(f"wrote {args.work / (name + '.json')} and {args.work / (name + '.md')}")
    if getattr(args, "json", None):
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0
