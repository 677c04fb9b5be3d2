"""`onen train --family grdnet` through the real `onen` command on tiny 64x64 parts: it trains, resumes, writes history
and summary; `onen eval --run` and `onen export --run` work on its run, the station's ONNX Runtime backend runs the
bundle, `onen calibrate` calibrates it and the daemon serves it over MQTT. Plus the training items (clean target,
every mark in the mask), the synthetic validation fallback and the refusals."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch
from support.daemon import calibrate_on_good_folder, results_of_a_video

from onen.edge.backends.onnxruntime_backend import OnnxRuntimeBackend
from onen.edge.bundle import load_bundle
from onen.edge.cli import main as onen
from onen.train.data.dataset import InspectionDataset
from onen.train.data.readers import load_index
from onen.train.data.synthetic import SyntheticDefects
from onen.train.grdnet_training import WithCleanTarget, validation_set
from onen.train.history import read_history
from onen.train.tiny_data import make_tiny_set, write_tiny_dataset
from onen.train.trainer import TrainConfig

TINY = ["--size", "64", "--batch-size", "8"]


@pytest.fixture(scope="module")
def tiny_csv(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny-grdnet"), seed=3, count=48, size=64)


def _train(tiny_csv, out, *extra: str) -> int:
    command = ["train", "--family", "grdnet", "--data", str(tiny_csv), "--supervision", "none", "--out", str(out)]
    return onen([*command, *TINY, *extra])


@pytest.fixture(scope="module")
def grdnet_run(tiny_csv, tmp_path_factory):
    run = tmp_path_factory.mktemp("grdnet-run") / "run"
    assert _train(tiny_csv, run, "--epochs", "2") == 0
    return run


@pytest.mark.slow
def test_train_writes_history_and_summary_and_resumes_for_one_more_epoch(grdnet_run, tiny_csv, tmp_path):
    for name in ("config.json", "splits.json", "history.csv", "history.png", "summary.json", "grdnet_best.pt"):
        assert (grdnet_run / name).is_file(), name
    config = json.loads((grdnet_run / "config.json").read_text())
    assert config["family"] == "grdnet" and config["supervision"] == "none"
    assert config["grdnet"]["weights"]["roi_mode"] == "target"  # the loss weights' default
    assert config["grdnet"]["model"]["input_height"] == config["grdnet"]["model"]["input_width"] == 64
    summary = json.loads((grdnet_run / "summary.json").read_text())
    assert summary["grdnet"]["threshold_source"] in ("validation", "default")
    assert summary["grdnet"]["thresholds"]["source"] == summary["grdnet"]["threshold_source"]
    assert summary["grdnet_checkpoint"]["file"] == "grdnet_best.pt" and summary["timings_s"]["grdnet"] > 0
    rows = read_history(grdnet_run / "history.csv")
    assert [row["epoch"] for row in rows] == [1, 2]
    for key in ("loss_d", "loss_g_contextual", "loss_u_focal", "d_real", "d_fake", "d_won", "val_recon_loss"):
        assert all(row[key] is not None for row in rows), key
    assert all(0 < row["d_real"] < 1 and 0 < row["d_fake"] < 1 for row in rows)

    resumed = tmp_path / "resumed"
    shutil.copytree(grdnet_run, resumed)
    assert _train(tiny_csv, resumed, "--epochs", "3", "--resume") == 0
    again = read_history(resumed / "history.csv")
    assert [row["epoch"] for row in again] == [1, 2, 3]
    assert again[:2] == rows  # the first two epochs are the original run's, continued rather than retrained
    state = torch.load(resumed / "checkpoints" / "grdnet_last.pt", weights_only=False)
    assert state["epoch"] == 2 and set(state["optimisers"]) == {"generator", "discriminator", "unet"}
    resumed_summary = json.loads((resumed / "summary.json").read_text())
    assert resumed_summary["grdnet_checkpoint"]["epochs"] == 3
    # the training time counts the first process's two epochs too, not only the resumed one's
    assert resumed_summary["timings_s"]["grdnet"] >= sum(row["seconds"] for row in again) > 0


@pytest.mark.slow
def test_eval_on_a_grdnet_run_writes_a_report(grdnet_run, tmp_path):
    out = tmp_path / "eval"
    assert onen(["eval", "--run", str(grdnet_run), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert 0 <= report["image_auroc"] <= 1 and report["threshold_source"] == "validation"
    assert report["evaluated"]["model"] == "grdnet"


@pytest.mark.slow
def test_export_writes_a_grdnet_bundle_the_station_backend_runs(grdnet_run, tmp_path):
    bundle_dir = tmp_path / "bundle"
    assert onen(["export", "--run", str(grdnet_run), "--out", str(bundle_dir)]) == 0
    bundle = load_bundle(bundle_dir)
    manifest = bundle.manifest
    assert manifest.family == "grdnet" and manifest.thresholds.source == "validation"
    assert manifest.training["grdnet_checkpoint"]["file"] == "grdnet_best.pt"
    assert manifest.classes_supervised is False  # supervision none
    outputs = OnnxRuntimeBackend(bundle).infer(np.zeros((3, 64, 64, 3), np.uint8))
    classes = len(manifest.class_names)
    assert outputs.score.shape == (3,) and outputs.anomaly_map.shape == (3, 1, 64, 64)
    assert outputs.class_logits.shape == (3, classes)

    parts = make_tiny_set(seed=11, count=64, size=64)  # 32 good: enough to show FRR <= 0.1
    good = tmp_path / "good"
    good.mkdir()
    for index, image in enumerate(parts.images[parts.labels == 0]):
        cv2.imwrite(str(good / f"{index:03d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    calibration = calibrate_on_good_folder(bundle_dir, good, tmp_path / "calibration" / "line.yaml")
    results_of_a_video(tmp_path, bundle_dir, list(parts.images[:6]), calibration)  # one valid result per frame


def test_grdnet_refuses_other_supervisions_and_roi_mode_is_grdnets(tiny_csv, tmp_path, capsys):
    command = ["train", "--data", str(tiny_csv), "--out", str(tmp_path / "r")]
    assert onen([*command, "--family", "grdnet", "--supervision", "weak"]) == 2
    assert "--family grdnet trains from good images" in capsys.readouterr().err
    assert onen([*command, "--supervision", "none", "--roi-mode", "target"]) == 2
    assert "--roi-mode is GRD-Net's" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse refuses a value outside the field's choices
        onen([*command, "--family", "grdnet", "--supervision", "none", "--roi-mode", "inside"])
    assert "invalid choice: 'inside'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def _good_items(tiny_csv, outside_in_mask: bool) -> InspectionDataset:
    index = load_index(str(tiny_csv))
    good = [s for s in index.samples if s.label == 0][:6]
    return InspectionDataset(
        good,
        index.class_names,
        64,
        64,
        aoi=index.aoi,
        synthetic=SyntheticDefects(seed=0),
        synthetic_probability=1.0,
        outside_marks=SyntheticDefects(seed=3),
        outside_probability=1.0,
        outside_in_mask=outside_in_mask,
    )


def test_training_items_hold_the_clean_target_and_every_mark_in_the_mask(tiny_csv):
    items = WithCleanTarget(_good_items(tiny_csv, outside_in_mask=True))
    onen_items = _good_items(tiny_csv, outside_in_mask=False)  # OneN's dataset: outside marks stay out of the mask
    for index in range(len(items)):
        item, onen_item = items[index], onen_items[index]
        outside, inside = item["aoi"] == 0, item["aoi"] > 0
        assert item["mask"][outside].sum() > 0 and onen_item["mask"][outside].sum() == 0
        assert torch.equal(item["mask"][inside], onen_item["mask"][inside]) and item["mask"][inside].sum() > 0
        assert torch.equal(item["image"], onen_item["image"]) and int(item["label"]) == 1
        clean, _, _ = items.dataset.load_resized(index)
        assert torch.equal(item["target"], torch.from_numpy(clean))
        changed = (item["image"] != item["target"]).any(dim=-1)
        assert not changed[item["mask"] == 0].any()  # the marks are the only pixels that differ from the target


def test_validation_without_real_defects_gets_fixed_synthetic_ones(tiny_csv):
    index = load_index(str(tiny_csv))
    good = [s for s in index.samples if s.label == 0][:8]
    cfg = TrainConfig(data=str(tiny_csv), out="unused", supervision="none", family="grdnet")
    cfg.geometry = {"height": 64, "width": 64}
    val = InspectionDataset(good, index.class_names, 64, 64, aoi=index.aoi)
    chosen, kind = validation_set(cfg, index, val)
    labels = [int(chosen[i]["label"]) for i in range(len(chosen))]
    assert kind == "synthetic" and 0 in labels and 1 in labels
    assert labels == [int(chosen[i]["label"]) for i in range(len(chosen))]  # the same defects every epoch
    mixed = InspectionDataset(list(index.samples)[:8], index.class_names, 64, 64, aoi=index.aoi)
    assert validation_set(cfg, index, mixed) == (mixed, "real")
