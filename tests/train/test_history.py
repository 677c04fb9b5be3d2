"""The student's per-epoch validation on tiny real runs: history.csv / history.png, the best checkpoint beside the
last (what export and eval use), `--resume` continuing the history, and a validation pass that leaves the training
random streams alone (the same weights with it or without it)."""

from __future__ import annotations

import csv
import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from onen.train import runs
from onen.train.history import read_history, training_streams_kept
from onen.train.runtime import seed_everything
from onen.train.tiny_data import write_tiny_dataset
from onen.train.trainer import (
    TrainConfig,
    _datasets,
    _prepare_run,
    build_run_student,
    predict_dataset,
    train,
    train_student,
)

TINY = {"size": 64, "patch": 8, "dim": 16, "depth": 1, "heads": 2, "stem": "conv", "batch_size": 16}


def _config(data: Path, out: Path, epochs: int = 2, **overrides) -> TrainConfig:
    options = {**TINY, **overrides}
    return TrainConfig(data=str(data), out=str(out), epochs=epochs, teacher_epochs=0, device="cpu", **options)


@pytest.fixture(scope="module")
def tiny_csv(tmp_path_factory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("history-data"), seed=4, count=48, size=32)


def test_history_best_checkpoint_and_resume(tiny_csv, tmp_path):
    run = train(_config(tiny_csv, tmp_path / "run", epochs=2))
    rows = read_history(run / runs.HISTORY)
    assert [row["epoch"] for row in rows] == [1, 2]
    for row in rows:
        assert row["loss"] > 0 and row["lr"] > 0 and row["val_images"] > 0 and row["loss_image"] > 0
        assert 0 <= row["val_image_auroc"] <= 1 and 0 <= row["val_pixel_auroc"] <= 1
    assert (run / runs.HISTORY_PLOT).stat().st_size > 5000
    summary = json.loads((run / runs.SUMMARY).read_text())
    chosen = summary["student_checkpoint"]
    ranks = [(row["val_image_auroc"], row["val_pixel_auroc"]) for row in rows]
    assert chosen["selected_by"] == "val_image_auroc" and chosen["tie_break"] == "val_pixel_auroc"
    assert chosen["epochs"] == 2
    assert chosen["epoch"] == 1 + ranks.index(max(ranks))  # image AUROC, then pixel AUROC, then the earliest
    assert chosen["value"] == pytest.approx(max(ranks)[0], abs=1e-5)
    # the summary's figures and thresholds are the chosen epoch's student's, the one export and eval load
    assert summary["student"]["validation"]["image_auroc"] == pytest.approx(chosen["value"], abs=1e-6)
    assert summary["student"]["threshold_source"] == "validation"
    assert summary["student"]["thresholds"]["source"] == "validation"
    assert summary["student"]["validation"]["class_accuracy"] is not None  # spot and scratch: two defect classes
    best = torch.load(run / runs.STUDENT_BEST, weights_only=False)["model"]
    assert set(best) == set(runs.load_student(run).state_dict())  # load_student gives the best one by default
    assert (run / runs.STUDENT).is_file()  # the last epoch's beside it
    info = runs.load_run(run).export_info()
    assert info.thresholds.source == "validation" and info.training["student_checkpoint"] == chosen

    first_rows = (run / runs.HISTORY).read_text().splitlines()
    resumed = _config(tiny_csv, run, epochs=3)
    train(resumed, resume=True)
    lines = (run / runs.HISTORY).read_text().splitlines()
    assert lines[: len(first_rows)] == first_rows and len(lines) == len(first_rows) + 1  # continued, not restarted
    rows = read_history(run / runs.HISTORY)
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    chosen = json.loads((run / runs.SUMMARY).read_text())["student_checkpoint"]
    ranks = [(row["val_image_auroc"], row["val_pixel_auroc"]) for row in rows]
    assert chosen["epoch"] == 1 + ranks.index(max(ranks)) and chosen["epochs"] == 3
    timings = json.loads((run / runs.SUMMARY).read_text())["timings_s"]
    assert timings["student"] >= sum(row["seconds"] for row in rows) > 0  # all three epochs, not the resumed one's


def test_validation_leaves_the_training_streams_alone(tiny_csv, tmp_path):
    """Two students trained alike, one validated every epoch and one not: the same weights. The Lite0 stem draws
    its drop-connect masks from torch's global stream, which a DataLoader's start also draws from."""
    weights = []
    for name, validated in (("with", True), ("without", False)):
        cfg = _config(tiny_csv, tmp_path / name, epochs=2, **{"stem": "lite0"})
        run_dir = Path(cfg.out)
        run_dir.mkdir(parents=True)
        seed_everything(cfg.seed)
        index, splits = _prepare_run(cfg, run_dir, resume=False)
        train_ds, val_ds = _datasets(cfg, index, splits)
        seed_everything(cfg.seed + 1)
        student, chosen = train_student(
            cfg, train_ds, None, torch.device("cpu"), run_dir, False, val_ds=val_ds if validated else None
        )
        assert (chosen["selected_by"] is not None) == validated
        weights.append(torch.load(run_dir / runs.STUDENT, weights_only=False)["model"])
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


def test_a_validation_pass_draws_nothing_from_the_training_streams(tiny_csv, tmp_path):
    cfg = _config(tiny_csv, tmp_path / "run")
    Path(cfg.out).mkdir()
    index, splits = _prepare_run(cfg, Path(cfg.out), resume=False)
    _, val_ds = _datasets(cfg, index, splits)
    model = build_run_student(cfg, 0)
    cpu = torch.device("cpu")
    before = torch.get_rng_state()
    predict_dataset(model, val_ds, cfg.batch_size, cpu)
    assert not torch.equal(before, torch.get_rng_state())  # a DataLoader's start draws from torch's global stream
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    with training_streams_kept(cpu):
        predict_dataset(model, val_ds, cfg.batch_size, cpu)
        np.random.random(), random.random()
    assert torch.equal(before[0], torch.get_rng_state())
    assert np.array_equal(before[1], np.random.get_state()[1]) and before[2] == random.getstate()


def test_no_good_validation_image_falls_back_loudly(tiny_csv, tmp_path, caplog):
    """Validation rows that are all defective: training goes on, the thresholds say `default` and why."""
    data = tmp_path / "data.csv"
    with open(tiny_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    defective = [row for row in rows if row["label"] == "1"]
    for row in rows:
        row["image"] = str(tiny_csv.parent / row["image"])
        row["mask"] = str(tiny_csv.parent / row["mask"]) if row["mask"] else ""
        row["aoi"] = str(tiny_csv.parent / row["aoi"])
        row["split"] = "train"
    for row in rows[len(rows) // 2 :]:
        row["split"] = "test"
    for row in defective[:2]:
        row["split"] = "val"
    with open(data, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with caplog.at_level(logging.WARNING, logger="onen.train.trainer"):
        run = train(_config(data, tmp_path / "run", epochs=1))
    summary = json.loads((run / runs.SUMMARY).read_text())
    assert summary["student"]["threshold_source"] == "default"
    assert "no good image" in summary["student"]["threshold_fallback_reason"]
    assert any("threshold_source 'default'" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert runs.load_run(run).export_info().thresholds.source == "default"


def test_a_run_from_before_is_refused_until_resume_rewrites_it(tiny_csv, tmp_path):
    """A run trained before threshold sources and best checkpoints: eval/export refuse it, naming the command that
    rewrites it; that command trains nothing more and says the last epoch is the one used, and why."""
    from onen.train.runs import RunError

    run = train(_config(tiny_csv, tmp_path / "run", epochs=1))
    for name in (runs.STUDENT_BEST, runs.HISTORY, f"{runs.CHECKPOINTS}/{runs.STUDENT_BEST}"):
        (run / name).unlink()
    summary = json.loads((run / runs.SUMMARY).read_text())
    del summary["student"]["thresholds"]["source"]
    (run / runs.SUMMARY).write_text(json.dumps(summary))
    with pytest.raises(RunError, match="--resume"):
        runs.load_run(run).export_info()
    with pytest.raises(RunError, match="--resume"):
        runs.load_student(run)
    train(_config(tiny_csv, run, epochs=1), resume=True)
    rewritten = json.loads((run / runs.SUMMARY).read_text())
    assert rewritten["student"]["thresholds"]["source"] == "validation"
    assert rewritten["student_checkpoint"]["selected_by"] is None
    assert "before per-epoch validation" in rewritten["student_checkpoint"]["reason"]
    assert runs.load_run(run).export_info().thresholds.source == "validation"
