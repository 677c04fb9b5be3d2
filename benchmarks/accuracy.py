"""Issue 11's accuracy targets on two real sets (ELPV, magnetic tile) with `onen train` defaults, over seeds.

For each set (benchmarks.real_sets: one fixed stratified split, its fingerprint printed), supervision and seed,
it runs `onen train --data MANIFEST --supervision S --out RUN --seed N` (the defaults: no per-set flag) on the
manifest's train + val rows, then `onen eval` of the student and of the teacher on its test rows, at the
thresholds the run chose on validation. Finished runs and evaluations in --work are reused, so a long measurement
can be resumed.

Targets: ELPV weak accuracy >= 0.92 and image AUROC >= 0.95, none image AUROC reported; magnetic tile full
image / pixel AUROC 0.98 / 0.95 and class accuracy 0.90, plus recall >= 0.95 of the test defects while rejecting
<= 2 % of the good parts at the run's own threshold (every miss listed), weak 0.95 / 0.85, none 0.85; the exported
student >= 2x faster than the teacher in ONNX Runtime (batch 1, one thread, interleaved, median) at the geometry
the run used. A target is met when every seed meets it. Figures: mean (min-max) over the seeds, student beside
teacher, in the printed table and in --work/accuracy.json and accuracy.md.

--epochs, --teacher-epochs and --limit make a smoke run (bench-only, NOT the measurement): its runs and reports
carry a `smoke` name and are never mixed with the measured ones.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from onen.benchmarks.real_sets import SETS, split_set, write_manifest
from onen.benchmarks.train_targets import DEFAULT_DATA, median_latency

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
REPORTED = ("image_auroc", "pixel_auroc", "accuracy", "class_accuracy", "recall", "false_reject_rate")
SPEEDUP_TARGET = 2.0
AT_THRESHOLD = ("recall", "false_reject_rate", "accuracy")
# onen eval's threshold_source for a run's own validation threshold ("given": the eval before issue 11's wording)
VALIDATION_SOURCES = ("validation", "given")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work", type=Path, required=True, help="manifests, runs and reports go here (not the repo)")
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma list of {', '.join(SETS)}")
    parser.add_argument("--seeds", default="0,1", help="training seeds (the split is fixed whatever the seed)")
    parser.add_argument(
        "--supervision",
        default="full,weak,none",
        help="supervision levels to run where the set has them (ELPV: weak, none; magnetic tile: full, weak, none)",
    )
    parser.add_argument("--elpv-data", type=Path, default=DEFAULT_ELPV, help="ELPV folder (images/, labels.csv)")
    parser.add_argument("--mt-data", type=Path, default=DEFAULT_DATA, help="magnetic tile folder (MT_*/Imgs)")
    parser.add_argument("--repeats", type=int, default=200, help="latency: timed calls per model")
    smoke = parser.add_argument_group("smoke run (checks the bench end to end; NOT the measurement)")
    smoke.add_argument("--epochs", type=int, help="student epochs instead of onen train's default")
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


def train_run(run: Path, manifest: Path, supervision: str, seed: int, args) -> Path:
    """`onen train` with its defaults (smoke flags aside) into `run`; a finished run is reused, a started one
    resumed (like train_targets.train_run)."""
    if (run / "summary.json").is_file():
        print(f"[{run.name}] reusing {run}")
        return run
    command: list[object] = ["train", "--data", manifest, "--supervision", supervision, "--out", run, "--seed", seed]
    if args.epochs is not None:
        command += ["--epochs", args.epochs]
    if args.teacher_epochs is not None:
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


def eval_run(run: Path, model: str) -> dict:
    """`onen eval` of the run's student or teacher on its test split (cached in RUN/eval, RUN/eval-teacher)."""
    out = run / ("eval" if model == "student" else "eval-teacher")
    if not (out / "report.json").is_file():
        _onen(["eval", "--run", run, "--model", model, "--out", out])
    return json.loads((out / "report.json").read_text())


def teacher_figures(run: Path, student: dict) -> dict | None:
    """The teacher's figures on the same test rows: beside the student's in its report (onen eval does that when the
    run has a teacher), else from `onen eval --model teacher`; None for a run without a teacher."""
    beside = student.get("teacher")
    if isinstance(beside, dict) and all(key in beside for key in (*REPORTED, "threshold_source")):
        return beside
    if not (run / "teacher" / "teacher.pt").is_file():
        return None
    return eval_run(run, "teacher")


def misses(run: Path, report: dict) -> dict:
    """Every test defect scored below the image threshold the eval used, and every good part at or above it."""
    threshold = report.get("threshold")
    if threshold is None:
        return {"missed": [], "false_rejects": []}
    with open(run / "eval" / "scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))

    def listed(label: str, missed: bool) -> list[dict]:
        chosen = [r for r in rows if r["label"] == label and (float(r["score"]) < threshold) == missed]
        return [{"image": r["image"], "class": r["class"], "score": float(r["score"])} for r in chosen]

    return {"missed": listed("1", True), "false_rejects": listed("0", False)}


def latency(run: Path, repeats: int) -> dict | None:
    """Exported student vs teacher of `run` in ONNX Runtime at the run's input geometry (bundles cached in run)."""
    from onen.edge.bundle import MANIFEST, load_bundle
    from onen.train.export import export_run

    if not (run / "teacher" / "teacher.pt").is_file():
        return None
    bundles = {"student": run / "bundles" / "student", "teacher": run / "bundles" / "teacher"}
    for name, folder in bundles.items():
        if not (folder / MANIFEST).is_file():
            export_run(run, folder, teacher=name == "teacher", force=True)
    manifest = load_bundle(bundles["student"]).manifest
    geometry = (manifest.input_height, manifest.input_width)
    student_ms, teacher_ms = median_latency([f / "model.onnx" for f in bundles.values()], geometry, repeats)
    return {
        "input": {"height": geometry[0], "width": geometry[1]},
        "student_ms_median": student_ms,
        "teacher_ms_median": teacher_ms,
        "speedup": teacher_ms / student_ms,
    }


def _timing(run: Path) -> dict:
    config = json.loads((run / "config.json").read_text())
    splits = json.loads((run / "splits.json").read_text())
    timings = json.loads((run / "summary.json").read_text()).get("timings_s", {})
    epochs, teacher_epochs = config.get("epochs"), config.get("teacher_epochs")
    return {
        "train_images": len(splits["train"]),
        "val_images": len(splits["val"]),
        "epochs": epochs,
        "teacher_epochs": teacher_epochs,
        "size": config.get("size"),
        "geometry": config.get("geometry"),  # the resolved input and why (runs since `--size auto`)
        **{f"{k}_s": v for k, v in timings.items()},
        "student_s_per_epoch": timings["student"] / epochs if epochs and "student" in timings else None,
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
    meets = [v >= bound if comparison == ">=" else v <= bound for v in values]
    mean_meets = (sum(values) / len(values) >= bound) if comparison == ">=" else (sum(values) / len(values) <= bound)
    return "met" if all(meets) else ("mean only" if mean_meets else "NOT met")


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


def measure(set_name: str, supervision: str, manifest: Path, seeds: list[int], tag: str, args) -> dict:
    """Train, evaluate and time one set under one supervision over the seeds; figures per seed and summed up."""
    per_seed = {}
    for seed in seeds:
        run = args.work / "runs" / "_".join(p for p in (set_name, supervision, f"seed{seed}", tag) if p)
        train_run(run, manifest, supervision, seed, args)
        _check_test_rows(run, manifest)
        student = eval_run(run, "student")
        teacher = teacher_figures(run, student)
        per_seed[seed] = {
            "run": str(run),
            "student": {k: student.get(k) for k in REPORTED},
            "teacher": {k: teacher.get(k) for k in REPORTED} if teacher else None,
            "threshold": student.get("threshold"),
            "threshold_source": student.get("threshold_source"),
            "teacher_threshold_source": teacher.get("threshold_source") if teacher else None,
            "input": student.get("input"),
            "counts": student.get("counts"),
            "timing": _timing(run),
            **misses(run, student),
        }
    first_run = Path(per_seed[seeds[0]]["run"])
    speed = latency(first_run, args.repeats)
    figures = []
    # recall and false rejects count only at the threshold the run chose on validation
    validated = all(per_seed[s]["threshold_source"] in VALIDATION_SOURCES for s in seeds)
    targets = {key: (comparison, bound) for key, comparison, bound in TARGETS[(set_name, supervision)]}
    for key in REPORTED:
        student_values = [per_seed[s]["student"][key] for s in seeds]
        teacher_values = [per_seed[s]["teacher"][key] if per_seed[s]["teacher"] else None for s in seeds]
        if key not in targets and all(v is None for v in student_values):
            continue
        target = targets.get(key)
        figures.append(
            {
                "figure": key,
                "target": f"{target[0]} {target[1]}" if target else None,
                "student": _spread(student_values),
                "teacher": _spread(teacher_values),
                "met": _verdict(key, student_values, target, validated),
            }
        )
    if speed is not None:
        size = f"{speed['input']['height']}x{speed['input']['width']}"
        figures.append(
            {
                "figure": f"onnx_ms_batch1_1thread_{size}",
                "target": None,
                "student": _spread([speed["student_ms_median"]]),
                "teacher": _spread([speed["teacher_ms_median"]]),
                "met": None,
            }
        )
        figures.append(
            {
                "figure": "speedup_teacher_over_student",
                "target": f">= {SPEEDUP_TARGET}",
                "student": _spread([speed["speedup"]]),
                "teacher": None,
                "met": _met([speed["speedup"]], ">=", SPEEDUP_TARGET),
            }
        )
    timings = [per_seed[s]["timing"] for s in seeds]
    figures.append(
        {
            "figure": "training_s_per_epoch (phase time / epochs)",
            "target": None,
            "student": _spread([t.get("student_s_per_epoch") for t in timings]),
            "teacher": _spread([t.get("teacher_s_per_epoch") for t in timings]),
            "met": None,
        }
    )
    total_min = [t["total_s"] / 60 if t.get("total_s") is not None else None for t in timings]
    figures.append(
        {
            "figure": "training_min_per_run (both)",
            "target": None,
            "student": _spread(total_min),
            "teacher": None,
            "met": None,
        }
    )
    return {"set": set_name, "supervision": supervision, "seeds": per_seed, "latency": speed, "figures": figures}


def table(results: dict) -> list[str]:
    """Markdown table: one line per set, supervision and figure, student beside teacher."""
    lines = [
        "| set | supervision | figure | target | student | teacher | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in results["measurements"]:
        for figure in entry["figures"]:
            lines.append(
                f"| {SET_TITLES[entry['set']]} | {entry['supervision']} | {figure['figure']} | "
                f"{figure['target'] or '-'} | {_text(figure['student'])} | {_text(figure['teacher'])} | "
                f"{figure['met'] or '-'} |"
            )
    return lines


def _run_lines(results: dict) -> list[str]:
    """Per run: input geometry and where its thresholds came from; for magnetic tile full every missed defect."""
    lines = []
    for entry in results["measurements"]:
        for seed, row in entry["seeds"].items():
            where = f"{SET_TITLES[entry['set']]} {entry['supervision']}, seed {seed}"
            size = f"{row['input']['height']}x{row['input']['width']}" if row.get("input") else "?"
            geometry = row["timing"].get("geometry") or {}
            if geometry.get("chosen_by"):
                size += f" ({geometry['chosen_by']}: {geometry.get('reason', {}).get('summary', 'as given')})"
            lines.append(
                f"- {where}: input {size}, {row['timing']['train_images']} train + {row['timing']['val_images']} val "
                f"images; student threshold {row['threshold']} ({row['threshold_source']}), teacher's "
                f"({row['teacher_threshold_source']}); {len(row['missed'])} test defects missed, "
                f"{len(row['false_rejects'])} good parts rejected"
            )
            if (entry["set"], entry["supervision"]) == ("mt", "full"):
                lines += [f"  - missed {m['image']} [{m['class']}] score {m['score']:.4f}" for m in row["missed"]]
    return lines


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
    tag = _smoke_tag(args)
    if tag:
        print(f"SMOKE RUN ({tag}): checks the bench end to end; these figures are NOT the measurement")
    args.work.mkdir(parents=True, exist_ok=True)
    roots = {"elpv": args.elpv_data, "mt": args.mt_data}
    results: dict = {"smoke": tag or None, "seeds": seeds, "sets": {}, "measurements": []}
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
        for supervision in [s for s in SUPERVISIONS[set_name] if s in wanted]:
            results["measurements"].append(measure(set_name, supervision, manifest, seeds, tag, args))
    lines = table(results)
    misses_text = _run_lines(results)
    print("\n".join(lines))
    if misses_text:
        print("\n".join(misses_text))
    name = f"accuracy-{tag}" if tag else "accuracy"
    (args.work / f"{name}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    header = [f"# onen bench accuracy{' (SMOKE RUN: not the measurement)' if tag else ''}", ""]
    header += [f"- {SET_TITLES[k]}: split `{v['fingerprint']}` ({v['verdict']})" for k, v in results["sets"].items()]
    header += [f"- seeds {', '.join(map(str, seeds))}; figures are mean (min-max) over the seeds", ""]
    md_misses = ["", *misses_text] if misses_text else []
    (args.work / f"{name}.md").write_text("\n".join(header + lines + md_misses) + "\n")
    print(f"wrote {args.work / (name + '.json')} and {args.work / (name + '.md')}")
    if getattr(args, "json", None):
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0
