"""End to end on generated data: onen train -> onen eval -> onen export, through the real `onen` command."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from onen.edge.backends.onnxruntime_backend import OnnxRuntimeBackend
from onen.edge.bundle import load_bundle
from onen.edge.cli import main as onen
from onen.train.tiny_data import write_tiny_dataset

pytestmark = pytest.mark.slow  # long end-to-end runs: `pytest -m 'not slow'` leaves them out

TINY = ["--size", "64", "--patch", "8", "--dim", "32", "--depth", "2", "--batch-size", "16"]


@pytest.fixture(scope="module")
def tiny_csv(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny-data"), seed=3, count=48, size=64)


def test_train_eval_export(tiny_csv, tmp_path):
    run = tmp_path / "run"
    assert (
        onen(
            [
                "train",
                "--data",
                str(tiny_csv),
                "--supervision",
                "full",
                "--out",
                str(run),
                "--epochs",
                "2",
                "--teacher-epochs",
                "1",
                *TINY,
            ]
        )
        == 0
    )
    for name in (
        "config.json",
        "splits.json",
        "student.pt",
        "summary.json",
        "checkpoints/student_last.pt",
        "student_best.pt",
        "history.csv",
        "history.png",
        "teacher/teacher.pt",
    ):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    assert {"student", "teacher", "timings_s"} <= set(summary)
    assert 1 <= summary["teacher_checkpoint"]["epoch"] <= summary["teacher_checkpoint"]["epochs"] == 1
    config = json.loads((run / "config.json").read_text())
    assert config["format"] == "onen-run/3" and config["size"] == "64"
    geometry = {"height": 64, "width": 64, "resize": "stretch-halving", "chosen_by": "given", "reason": {}}
    assert config["geometry"] == geometry

    # resume asks for one more epoch: continues from the checkpoint, does not start over
    assert (
        onen(
            ["train", "--data", str(tiny_csv), "--supervision", "full", "--out", str(run), "--epochs", "3", "--resume"]
        )
        == 0
    )
    import torch

    assert torch.load(run / "checkpoints/student_last.pt", weights_only=False)["epoch"] == 2

    assert onen(["eval", "--run", str(run), "--out", str(run / "eval")]) == 0
    report = json.loads((run / "eval" / "report.json").read_text())
    for key in ("image_auroc", "pixel_auroc", "aupro", "f1", "accuracy", "class_accuracy", "confusion_matrix"):
        assert key in report

    bundle_dir = tmp_path / "bundle"
    assert onen(["export", "--run", str(run), "--out", str(bundle_dir)]) == 0
    bundle = load_bundle(bundle_dir)
    assert (
        bundle.manifest.metrics["test"]["image_auroc"] == report["image_auroc"]
    )  # the run's eval went into the manifest
    assert bundle.manifest.training["supervision"] == "full" and bundle.manifest.training["split_counts"]["test"]
    assert 0 < bundle.manifest.thresholds.image < 1
    assert bundle.manifest.resize == "stretch-halving" and bundle.manifest.training["geometry"] == config["geometry"]
    backend = OnnxRuntimeBackend(bundle)
    outputs = backend.infer(np.zeros((3, 64, 64, 3), np.uint8))
    assert outputs.score.shape == (3,) and outputs.anomaly_map.shape == (3, 1, 64, 64)
    assert outputs.class_logits.shape == (3, len(bundle.manifest.class_names))
    assert bundle.manifest.thresholds.source == "validation"  # chosen on the run's own validation split
    assert bundle.manifest.training["student_checkpoint"]["file"] == "student_best.pt"
    import onnx

    graph = onnx.load(str(bundle_dir / "model.onnx")).graph
    weights = " ".join(i.name for i in graph.initializer) + " " + " ".join(n.name for n in graph.node)
    assert "class_head" in weights  # names do come from the modules
    assert "class_projection" not in weights and "projection" not in weights  # the distillation heads are training-only

    # what a user sees on the terminal: our own lines only, no exporter internals, no TracerWarnings
    done = subprocess.run(
        [sys.executable, "-m", "onen.edge.cli", "export", "--run", str(run), "--out", str(tmp_path / "again")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    printed = done.stdout + done.stderr
    assert "bundle written to" in printed
    for noise in ("onnxscript", "onnx_ir", "torch.onnx", "Warning", "torchvision"):
        assert noise not in printed, printed


@pytest.mark.parametrize("supervision", ["none", "weak"])
def test_other_supervision_levels_train(tiny_csv, tmp_path, supervision):
    run = tmp_path / supervision
    assert (
        onen(
            [
                "train",
                "--data",
                str(tiny_csv),
                "--supervision",
                supervision,
                "--out",
                str(run),
                "--epochs",
                "1",
                "--teacher-epochs",
                "1",
                "--no-aoi-guidance",
                *TINY,
            ]
        )
        == 0
    )
    config = json.loads((run / "config.json").read_text())
    assert config["supervision"] == supervision and config["aoi_guidance"] is False
    splits = json.loads((run / "splits.json").read_text())
    assert splits["test"], "the run keeps a held-out test split"
    from onen.train import runs

    student = runs.load_student(run)
    if supervision == "none":  # good-feature model on by default: fitted on the good training images, saved fitted
        fitted = json.loads((run / "good_features.json").read_text())
        import csv

        labels = {row["image"]: row["label"] for row in csv.DictReader(open(tiny_csv, newline=""))}
        assert fitted["train_images"] == sum(1 for path in splits["train"] if labels[path] == "0") >= 2
        assert student.good_features is not None and student.good_features.is_fitted
        assert student.projection.out_features == 112  # under none: the frozen ImageNet features' width
        bundle_dir = tmp_path / "bundle"  # the fitted model exports (export checks ONNX Runtime against torch)
        assert onen(["export", "--run", str(run), "--out", str(bundle_dir)]) == 0
        outputs = OnnxRuntimeBackend(load_bundle(bundle_dir)).infer(np.zeros((2, 64, 64, 3), np.uint8))
        assert outputs.score.shape == (2,) and np.isfinite(outputs.anomaly_map).all()
        manifest = load_bundle(bundle_dir).manifest  # no class labels were used: the bundle says so
        assert manifest.classes_supervised is False and len(manifest.class_names) > 2
        from onen.edge.calibration_file import from_bundle_defaults
        from onen.edge.postprocess import PostProcessor

        post = PostProcessor(manifest, from_bundle_defaults(load_bundle(bundle_dir), camera="cam"))
        assert post.classify(np.array([0.0, 5.0, 1.0]), is_defect=True) == ("defect", None)
    else:
        assert student.good_features is None and not (run / "good_features.json").exists()


def test_bad_input_gives_clear_errors(tmp_path, capsys):
    assert (
        onen(["train", "--data", str(tmp_path / "missing"), "--supervision", "full", "--out", str(tmp_path / "r")]) == 2
    )
    assert "missing" in capsys.readouterr().err
    assert onen(["export", "--run", str(tmp_path), "--out", str(tmp_path / "b")]) == 2
    assert "not a training run" in capsys.readouterr().err


def test_good_only_data_needs_supervision_none(tmp_path, capsys):
    import csv

    import cv2

    (tmp_path / "images").mkdir()
    with open(tmp_path / "data.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label", "class", "mask", "aoi", "split"])
        for i in range(8):
            cv2.imwrite(str(tmp_path / f"images/{i}.png"), np.full((32, 32), 100 + i, np.uint8))
            writer.writerow([f"images/{i}.png", 0, "good", "", "", ""])
    assert (
        onen(["train", "--data", str(tmp_path / "data.csv"), "--supervision", "full", "--out", str(tmp_path / "run")])
        == 2
    )
    assert "--supervision none" in capsys.readouterr().err
    assert not (tmp_path / "run" / "config.json").exists()  # nothing half-written: the same --out can be used again
