"""`onen eval --run` on tiny real runs: the run's own validation threshold by default, an optimistic test-chosen one
only when asked and then marked, the teacher's figures beside the student's, and no class accuracy for a model with
a single defect class."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from onen.edge.cli import main as onen
from onen.train.tiny_data import write_tiny_dataset
from onen.train.trainer import TrainConfig, train

TINY = {"size": 64, "patch": 8, "dim": 16, "depth": 1, "heads": 2, "stem": "conv", "batch_size": 16, "device": "cpu"}


@pytest.fixture(scope="module")
def run_with_teacher(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("eval-run")
    data = write_tiny_dataset(folder / "data", seed=6, count=48, size=32)
    return train(TrainConfig(data=str(data), out=str(folder / "run"), epochs=2, teacher_epochs=1, **TINY))


def test_eval_uses_the_runs_validation_threshold_and_shows_the_teacher(run_with_teacher, tmp_path, capsys):
    run = run_with_teacher
    summary = json.loads((run / "summary.json").read_text())
    assert onen(["eval", "--run", str(run), "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["threshold_source"] == "validation" and report["threshold_optimistic"] is False
    assert report["threshold"] == pytest.approx(summary["student"]["thresholds"]["image"])
    assert report["evaluated"]["checkpoint"] == summary["student_checkpoint"]
    assert report["class_accuracy"] is not None  # spot and scratch
    teacher = report["teacher"]
    assert teacher["counts"] == report["counts"]  # the same test images
    assert teacher["threshold_source"] == "validation"
    assert teacher["threshold"] == pytest.approx(summary["teacher"]["thresholds"]["image"])
    assert teacher["image_auroc"] is not None and Path(teacher["report"]).is_file()

    assert onen(["eval", "--run", str(run), "--test-best-f1", "--out", str(tmp_path / "best")]) == 0
    optimistic = json.loads((tmp_path / "best" / "report.json").read_text())
    assert optimistic["threshold_source"] == "test_best_f1" and optimistic["threshold_optimistic"] is True
    assert optimistic["threshold"] == pytest.approx(optimistic["threshold_best_f1"])
    assert optimistic["teacher"]["threshold_source"] == "test_best_f1"

    assert onen(["eval", "--run", str(run), "--threshold", "0.3", "--out", str(tmp_path / "user")]) == 0
    given = json.loads((tmp_path / "user" / "report.json").read_text())
    assert given["threshold"] == 0.3 and given["threshold_source"] == "user"
    assert given["teacher"]["threshold_source"] == "validation"  # a student threshold says nothing of the teacher

    capsys.readouterr()
    assert (
        onen(["eval", "--run", str(run), "--calibration", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "c")]) == 2
    )
    assert "--calibration needs --bundle" in capsys.readouterr().err


def test_one_defect_class_has_no_class_accuracy(tmp_path):
    data = write_tiny_dataset(tmp_path / "data", seed=7, count=48, size=32)
    with open(data, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["class"] = "defect" if row["label"] == "1" else "good"
    with open(data, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    run = train(TrainConfig(data=str(data), out=str(tmp_path / "run"), epochs=1, teacher_epochs=0, **TINY))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["student"]["validation"]["class_accuracy"] is None
    assert summary["student"]["validation"]["defect_class_accuracy"] is None
    assert onen(["eval", "--run", str(run), "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["class_accuracy"] is None and "teacher" not in report


def test_eval_bundle_threshold_from_its_manifest_or_a_calibration(tiny_bundle, tmp_path):
    from support.calibration import write_calibration

    from onen.edge.bundle import load_bundle

    bundle = load_bundle(tiny_bundle)
    data = sorted((tiny_bundle.parent / "data").glob("*.csv"))[0]
    assert onen(["eval", "--bundle", str(tiny_bundle), "--data", str(data), "--out", str(tmp_path / "own")]) == 0
    own = json.loads((tmp_path / "own" / "report.json").read_text())
    assert own["threshold_source"] == bundle.manifest.thresholds.source == "validation"
    assert own["threshold"] == pytest.approx(bundle.manifest.thresholds.image)

    calibration = tmp_path / "cam1.yaml"
    write_calibration(calibration, bundle)
    args = ["eval", "--bundle", str(tiny_bundle), "--data", str(data), "--calibration", str(calibration)]
    assert onen([*args, "--out", str(tmp_path / "calibrated")]) == 0
    calibrated = json.loads((tmp_path / "calibrated" / "report.json").read_text())
    assert calibrated["threshold"] == 0.3 and calibrated["threshold_source"] == "calibration"
    assert calibrated["evaluated"]["calibration"] == str(calibration)
