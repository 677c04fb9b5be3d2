"""Issue 2's station-model target: about 1000 images at 256x256 trained on this 2-core CPU in <= 20 minutes.

The station recipe is `onen train --size 256` with the epochs given here (teacher + student, both in the
one command, as a quality engineer runs it), on the magnetic tile set with the usual 25 % test split
(874 training + 134 validation images = 1008). It prints the wall time of each phase as the run recorded
it, the test-split figures of the student and its teacher, and the exported student's and teacher's
ONNX Runtime latency at 256 px (batch 1, median, one thread and ONNX Runtime's default threads).
A run that exists in --work is reused (its recorded times are printed again), so the timing is the one
of the run that trained.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from onen.benchmarks.train_targets import DEFAULT_DATA, evaluate_run, median_latency, train_run
from onen.train.config_file import load_recipe, shipped_recipes

BUDGET_MIN = 20.0

STATION = load_recipe(shipped_recipes()["station"])  # train/recipe_files/station.yaml: the bench's settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="magnetic tile folder (about 1000 training+validation images)"
    )
    parser.add_argument(
        "--work", type=Path, default=Path("/tmp/onen-station-model"), help="run, bundles and reports go here"
    )
    parser.add_argument("--size", type=int, default=int(STATION["size"]))
    parser.add_argument("--epochs", type=int, default=STATION["epochs"], help="student epochs (default: station.yaml)")
    parser.add_argument(
        "--teacher-epochs", type=int, default=STATION["teacher_epochs"], help="teacher epochs (default: station.yaml)"
    )
    parser.add_argument("--supervision", default=STATION["supervision"], choices=("none", "weak", "full"))
    parser.add_argument("--repeats", type=int, default=200, help="latency: timed calls per model")


def _latency(paths: list[Path], size: int, repeats: int) -> dict[str, list[float]]:
    """Median batch-1 latency (ms) with one intra-op thread (interleaved) and with ONNX Runtime's defaults."""
    import time

    import numpy as np
    import onnxruntime as ort

    figures = {"one_thread": median_latency(paths, size, repeats)}
    image = np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    defaults = []
    for path in paths:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for _ in range(10):
            session.run(None, {"image": image})
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            session.run(None, {"image": image})
            times.append(time.perf_counter() - started)
        defaults.append(float(np.median(times) * 1000))
    figures["default_threads"] = defaults
    return figures


def main(args: argparse.Namespace) -> int:
    from onen.train.export import export_run

    args.work.mkdir(parents=True, exist_ok=True)
    name = f"station_{args.supervision}_{args.size}"
    run = train_run(name, args.work, args.data, args.supervision, args)
    summary = json.loads((run / "summary.json").read_text())
    splits = json.loads((run / "splits.json").read_text())
    timings = summary.get("timings_s", {})
    total_min = timings.get("total", 0.0) / 60
    student, teacher = evaluate_run(run), evaluate_run(run, "teacher")
    bundles = args.work / "bundles"
    student_bundle = export_run(run, bundles / "student", force=True)
    teacher_bundle = export_run(run, bundles / "teacher", teacher=True, force=True)
    latency = _latency([student_bundle / "model.onnx", teacher_bundle / "model.onnx"], args.size, args.repeats)
    figures = {
        "run": str(run),
        "size": args.size,
        "train_images": len(splits["train"]),
        "val_images": len(splits["val"]),
        "epochs": args.epochs,
        "teacher_epochs": args.teacher_epochs,
        "torch_threads": os.environ.get("OMP_NUM_THREADS", "default"),
        "timings_s": timings,
        "total_min": round(total_min, 2),
        "budget_min": BUDGET_MIN,
        "student_test": {k: student.get(k) for k in ("image_auroc", "pixel_auroc", "aupro", "class_accuracy", "f1")},
        "teacher_test": {k: teacher.get(k) for k in ("image_auroc", "pixel_auroc", "class_accuracy")},
        "latency_ms": {
            "student": {k: v[0] for k, v in latency.items()},
            "teacher": {k: v[1] for k, v in latency.items()},
        },
    }
    print(
        f"station model: {figures['train_images']} training + {figures['val_images']} validation images at "
        f"{args.size}px, "
        f"teacher {args.teacher_epochs} + student {args.epochs} epochs: teacher {timings.get('teacher', 0):.0f} s + "
        "student "
        f"{timings.get('student', 0):.0f} s = {total_min:.1f} min (target <= {BUDGET_MIN:.0f} min: "
        f"{'met' if 0 < total_min <= BUDGET_MIN else 'NOT met'})"
    )
    s, t = figures["student_test"], figures["teacher_test"]
    print(
        f"test split: student image AUROC {s['image_auroc']}, pixel AUROC {s['pixel_auroc']}, class accuracy "
        f"{s['class_accuracy']}; "
        f"teacher image AUROC {t['image_auroc']}, class accuracy {t['class_accuracy']}"
    )
    one, default = latency["one_thread"], latency["default_threads"]
    print(
        f"ONNX Runtime batch 1 at {args.size}px, median: student {one[0]:.2f} ms (1 thread) / {default[0]:.2f} ms "
        "(default threads); "
        f"teacher {one[1]:.2f} / {default[1]:.2f} ms"
    )
    if getattr(args, "json", None):
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return 0
