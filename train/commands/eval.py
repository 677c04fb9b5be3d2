"""`onen eval`: evaluate a trained run (torch) or an exported bundle (ONNX Runtime, no torch needed) and
write report.json with ROC, score-histogram and worst-image overlay PNGs.

The image threshold is the model's own (a run's validation threshold, a bundle's manifest), a camera's calibration,
or the user's; `threshold_source` in the report says which. Choosing it on the evaluated images themselves is
allowed only when asked for (`--test-best-f1`) and then reported as optimistic. A run's student is reported with
its teacher's figures beside it (same images, same metrics) when the run has a teacher.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from onen.edge.config_models import BACKEND_KINDS

SPLIT_CHOICES = ("test", "val", "train", "all")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a run or a bundle: report.json (AUROC, AUPRO, F1, confusion...) + plots",
        description="With --run: the run's student (or --model teacher) on the run's test split. With --bundle: the "
        "exported model on --backend (ONNX Runtime by default; on the run's split when --run is also given). "
        "--data evaluates every image of another data set instead.",
    )
    parser.add_argument("--run", type=Path, help="training run directory (onen train --out)")
    parser.add_argument("--bundle", type=Path, help="exported bundle directory or .tar (evaluated on --backend)")
    parser.add_argument(
        "--backend",
        choices=BACKEND_KINDS,
        default="onnxruntime",
        help="with --bundle: the station backend to evaluate it on, e.g. openvino for its bf16 (default onnxruntime)",
    )
    parser.add_argument(
        "--data", type=Path, help="evaluate all images of this data set (folder or CSV) instead of the run's split"
    )
    parser.add_argument("--aoi", type=Path, help="one AOI mask for --data (default: the run's AOI on its own data)")
    parser.add_argument("--split", choices=SPLIT_CHOICES, default="test", help="which split of the run (default test)")
    parser.add_argument("--model", choices=("student", "teacher"), default="student", help="with --run: which network")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument(
        "--threshold",
        type=float,
        help="image threshold on the raw score (default: the model's own, chosen on the run's validation split)",
    )
    choice.add_argument("--calibration", type=Path, help="with --bundle: use this camera calibration's image threshold")
    choice.add_argument(
        "--test-best-f1",
        action="store_true",
        help="use the threshold with the best F1 on the evaluated images themselves (optimistic: it has seen the "
        "answers; reported as threshold_source test_best_f1)",
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--worst", type=int, default=6, help="worst-scored images to draw per group (default 6)")
    parser.add_argument("--out", type=Path, help="output folder (default RUN_DIR/eval, or required)")
    parser.set_defaults(handler=run)


def _samples_and_aoi(args, run_info):
    """Which samples: all of --data, or the chosen split of the run."""
    from onen.edge.errors import OnenError
    from onen.train.data.readers import load_index

    if args.data is not None:
        index = load_index(args.data, aoi=args.aoi)
        return index.samples, index.aoi, {"data": str(args.data), "split": "all"}
    if run_info is None:
        raise OnenError("nothing to evaluate: give --data PATH, or --run RUN_DIR to use the run's test split")
    if args.split == "all":
        samples = list(run_info.index.samples)
    else:
        samples = run_info.samples(args.split)
    if not samples:
        raise OnenError(
            f"{run_info.run_dir}: the run's '{args.split}' split is empty; choose another --split or give --data"
        )
    return samples, args.aoi or run_info.aoi, {"data": run_info.data, "split": args.split}


def run(args: argparse.Namespace) -> int:
    from onen.edge.errors import OnenError
    from onen.train import repeatability, runs
    from onen.train.evaluate import REPORT

    if args.run is None and args.bundle is None:
        raise OnenError("give --run RUN_DIR and/or --bundle BUNDLE")
    if args.batch_size < 1:
        raise OnenError("--batch-size must be >= 1")
    if args.calibration is not None and args.bundle is None:
        raise OnenError("--calibration needs --bundle (a calibration is made for one bundle's model)")
    out = args.out or (args.run / ("eval" if args.bundle is None else "eval-bundle") if args.run else None)
    if out is None:
        raise OnenError("--out DIR is required with --bundle alone")

    run_info = runs.load_run(args.run, with_data=args.data is None) if args.run is not None else None
    samples, aoi, source = _samples_and_aoi(args, run_info)
    if args.bundle is not None:
        predict, meta = _bundle_predictor(args.bundle, args.backend, args.calibration)
    else:
        predict, meta = _run_predictor(args.run, run_info, args.model)
    groups = _benchmark_groups(Path(source["data"]))
    extra: dict = {}
    with_teacher = args.bundle is None and args.model == "student"
    if with_teacher and (args.run / runs.TEACHER_DIR / runs.TEACHER_FINAL).is_file():
        teacher_predict, teacher_meta = _run_predictor(args.run, run_info, "teacher")
        teacher = _evaluate(args, teacher_predict, teacher_meta, samples, aoi, out / "teacher", source, groups, True)
        extra["teacher"] = {k: teacher.get(k) for k in (*SHOWN, *TEACHER_EXTRA)} | {
            "report": str(out / "teacher" / REPORT)
        }
    report = _evaluate(args, predict, meta, samples, aoi, out, source, groups, False, extra)
    print(json.dumps({k: report[k] for k in SHOWN}, indent=2))
    noise_line = repeatability.verdict_line(report.get("repeatability") or {})
    if noise_line:
        print(noise_line)
    if "teacher" in report:
        print("teacher on the same images: " + json.dumps({k: report["teacher"][k] for k in SHOWN}))
    print(f"wrote {Path(out) / REPORT} and plots in {out}")
    return 0


SHOWN = ("image_auroc", "pixel_auroc", "aupro", "f1", "accuracy", "class_accuracy", "threshold", "threshold_source")
TEACHER_EXTRA = ("recall", "false_reject_rate", "threshold_optimistic", "f1_best", "counts")


def _evaluate(args, predict, meta, samples, aoi, out, source, groups, beside: bool, extra=None) -> dict:
    """One model's report: its own threshold unless the user chose one (a --threshold is on the student's score,
    so the teacher beside it keeps its own)."""
    from onen.train.evaluate import evaluate

    meta = dict(meta)
    threshold, threshold_source = meta.pop("threshold"), meta.pop("threshold_source")
    if args.test_best_f1:
        threshold = threshold_source = None
    elif args.threshold is not None and not beside:
        threshold, threshold_source = args.threshold, "user"
    return evaluate(
        predict,
        samples,
        meta.pop("class_names"),
        meta.pop("height"),
        meta.pop("width"),
        out,
        aoi=aoi,
        batch_size=args.batch_size,
        threshold=threshold,
        threshold_source=threshold_source,
        worst=args.worst,
        progress=not beside,
        extra={"evaluated": {**source, **meta}, **(extra or {})},
        groups=groups,
        classes_supervised=meta.pop("classes_supervised"),
    )


def _benchmark_groups(data: Path) -> dict[str, str] | None:
    """For the generated AOI benchmark: image -> kind (good_plain, good_outside, scratch...), so the report
    shows how often good parts with marks outside the AOI are rejected."""
    from onen.train.data.synth_benchmark import INFO_NAME, load_info

    manifest = data if data.suffix.lower() == ".csv" else data / "manifest.csv"
    if not (manifest.parent / INFO_NAME).is_file():
        return None
    return {path: facts["kind"] for path, facts in load_info(manifest).items()}


def _run_predictor(run_dir: Path, run_info, which: str):
    from onen.train import runs
    from onen.train.export import torch_outputs

    if which == "teacher":
        from onen.train.models.efficientnet_lite import TeacherExport

        model = TeacherExport(runs.load_teacher(run_dir)).eval()
    else:
        model = runs.load_model(run_dir)  # the run's family's: OneN student or GRD-Net
        which = run_info.model_key
    model = run_info.whole_frame(model)  # a run trained on tiles is evaluated on whole images, as its bundle runs
    thresholds = run_info.thresholds(which)
    meta = {
        "class_names": run_info.class_names,
        "height": run_info.input_height,
        "width": run_info.input_width,
        "threshold": thresholds["image"],
        "threshold_source": thresholds["source"],
        "classes_supervised": run_info.supervision != "none",  # none: class heads never saw a class label
        "model": which,
        "run": str(run_dir),
        "backend": "torch",
    }
    if which != "teacher":
        meta["checkpoint"] = run_info.summary.get(f"{which}_checkpoint")
    return (lambda batch: torch_outputs(model, batch)), meta


def _bundle_predictor(bundle_path: Path, backend_kind: str, calibration: Path | None = None):
    from onen.edge.backends.factory import create_backend
    from onen.edge.bundle import load_bundle
    from onen.edge.calibration_file import load_calibration

    bundle = load_bundle(bundle_path)
    threshold, threshold_source = bundle.manifest.thresholds.image, bundle.manifest.thresholds.source
    if calibration is not None:  # refused when it was made for another model
        threshold, threshold_source = load_calibration(calibration, bundle).image_threshold, "calibration"
    backend = create_backend(bundle, backend_kind)

    def predict(batch):
        outputs = backend.infer(batch)
        return outputs.score, outputs.anomaly_map, outputs.class_logits

    manifest = bundle.manifest
    meta = {
        "class_names": list(manifest.class_names),
        "height": manifest.input_height,
        "width": manifest.input_width,
        "threshold": threshold,
        "threshold_source": threshold_source,
        "classes_supervised": manifest.classes_supervised,
        "model": f"{manifest.name} {manifest.version} ({manifest.family})",
        "bundle": str(bundle_path),
        "backend": backend.name,
        "precision": backend.describe().get("precision", "fp32"),
    }
    if calibration is not None:
        meta["calibration"] = str(calibration)
    return predict, meta
