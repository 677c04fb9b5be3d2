"""Repeatability under sensor noise: the noise itself, the flip counts, and what `evaluate` reports with it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from onen.train import repeatability
from onen.train.data.sample import Sample
from onen.train.evaluate import evaluate


def test_sensor_noise_is_luminance_noise_of_the_stated_size_and_seeded():
    batch = np.full((2, 64, 64, 3), 128, np.uint8)
    noisy = repeatability.add_sensor_noise(batch, 2.0, repeatability.noise_rng(2.0, 0))
    assert noisy.dtype == np.uint8 and noisy.shape == batch.shape
    assert (noisy[..., 0] == noisy[..., 1]).all() and (noisy[..., 1] == noisy[..., 2]).all()  # one draw per pixel
    assert np.std(noisy.astype(float)) == pytest.approx(2.0, rel=0.05)
    again = repeatability.add_sensor_noise(batch, 2.0, repeatability.noise_rng(2.0, 0))
    assert np.array_equal(noisy, again)
    other = repeatability.add_sensor_noise(batch, 2.0, repeatability.noise_rng(2.0, 16))
    assert not np.array_equal(noisy, other)  # another batch gets another draw
    edges = repeatability.add_sensor_noise(
        np.array([[[[0, 0, 0], [255, 255, 255]]]], np.uint8), 50.0, np.random.default_rng(0)
    )
    assert edges.min() >= 0 and edges.max() <= 255  # clipped, not wrapped around


def test_summary_counts_flips_both_ways():
    clean = np.array([0.1, 0.4, 0.6, 0.9, 0.55])
    noisy = np.array([0.1, 0.6, 0.4, 0.95, 0.56])
    summary = repeatability.summarise(clean, noisy, threshold=0.5)
    assert summary["verdicts_flipped"] == 2 and summary["flip_rate"] == pytest.approx(0.4)
    assert summary["flipped_to_reject"] == 1 and summary["flipped_to_pass"] == 1
    assert summary["max_abs_score_change"] == pytest.approx(0.2)
    assert summary["median_abs_score_change"] == pytest.approx(0.05)  # of 0, 0.2, 0.2, 0.05, 0.01
    assert summary["share_scored_higher"] == pytest.approx(0.6)


def _flat_parts(root, count=12):
    import cv2

    root.mkdir(parents=True)
    samples = []
    for i in range(count):
        image = np.full((32, 32, 3), 100, np.uint8)
        label = i % 2
        if label:
            image[8:24, 8:24] = 110 if i % 4 == 1 else 102  # a patch 10 (clear) or 2 (faint) grey levels above the part
        path = root / f"{i}.png"
        cv2.imwrite(str(path), image)
        samples.append(Sample(path, label, "defect" if label else "good"))
    return samples


def _roughness_model(batch):
    """Scores the mean step between neighbouring pixels: sensor noise alone raises it."""
    steps = np.abs(np.diff(batch.astype(np.float32).mean(axis=3), axis=2)).mean(axis=(1, 2))
    n = len(batch)
    return np.minimum(steps, 1.0), np.zeros((n, 1, 32, 32), np.float32), np.zeros((n, 1), np.float32)


def _brightness_model(batch):
    """Scores the brightest patch's excess over the part: averaging makes it steady under noise."""
    gray = batch.astype(np.float32).mean(axis=3)
    excess = gray[:, 8:24, 8:24].mean(axis=(1, 2)) - gray[:, :4, :].mean(axis=(1, 2))
    n = len(batch)
    return np.clip(excess / 12.0, 0, 1), np.zeros((n, 1, 32, 32), np.float32), np.zeros((n, 1), np.float32)


def test_evaluate_reports_how_a_noise_sensitive_model_flips(tmp_path):
    samples = _flat_parts(tmp_path / "parts")
    fragile = evaluate(
        _roughness_model,
        samples,
        ["good", "defect"],
        32,
        32,
        tmp_path / "fragile",
        threshold=0.5,
        threshold_source="user",
        progress=False,
        batch_size=5,
    )
    steady = evaluate(
        _brightness_model,
        samples,
        ["good", "defect"],
        32,
        32,
        tmp_path / "steady",
        threshold=0.5,
        threshold_source="user",
        progress=False,
        batch_size=5,
    )
    for sigma in repeatability.NOISE_SIGMAS:
        key = f"sigma_{sigma:g}"
        # on flat parts every clean score is ~0; under noise the roughness passes 0.5 and rejects every part
        assert fragile["repeatability"][key]["flipped_to_reject"] == 12
        assert fragile["repeatability"][key]["share_scored_higher"] == 1.0
        assert steady["repeatability"][key]["verdicts_flipped"] == 0
        assert steady["repeatability"][key]["max_abs_score_change"] < 0.1
    assert fragile["repeatability"]["threshold"] == 0.5
    saved = json.loads((tmp_path / "fragile" / "report.json").read_text())
    assert saved["repeatability"]["sigma_1"]["verdicts_flipped"] == 12
    assert (tmp_path / "fragile" / "repeatability.png").stat().st_size > 5000
    assert saved["plots"]["repeatability"].endswith("repeatability.png")
    # what `onen eval` prints: the fragile model is pointed at the repeatable recipe, the steady one is not
    fragile_line = repeatability.verdict_line(fragile["repeatability"])
    assert fragile_line.startswith("repeatability: 12 / 12 verdicts flipped under 1 / 2 grey levels of sensor noise")
    assert "(100.0%); if the camera's noise is that large, train with --config train/recipe_files/repeatable.yaml" in (
        fragile_line
    )
    steady_line = repeatability.verdict_line(steady["repeatability"])
    assert steady_line.startswith("repeatability: 0 / 0 verdicts flipped") and "repeatable.yaml" not in steady_line
    assert repeatability.verdict_line({}) is None  # a report written before the check


def test_training_items_get_sensor_noise_only_when_asked(tmp_path):
    from onen.train.data.dataset import InspectionDataset

    samples = _flat_parts(tmp_path / "parts", count=4)
    clean = InspectionDataset(samples, ["good", "defect"], 32, 32, seed=1)
    noisy = InspectionDataset(samples, ["good", "defect"], 32, 32, seed=1, sensor_noise=4.0)
    spreads = []
    for index in range(4):
        a, b = clean[index]["image"].numpy().astype(float), noisy[index]["image"].numpy().astype(float)
        assert (clean[index]["mask"] == noisy[index]["mask"]).all() and clean[index]["label"] == noisy[index]["label"]
        spreads.append(np.std(b - a))
        assert (b[..., 0] == b[..., 1]).all()  # luminance noise, as repeatability measures it
    assert 0 < max(spreads) <= 4.5 and len(set(spreads)) > 1  # a sigma drawn per item, up to the bound
    assert np.array_equal(noisy[2]["image"].numpy(), noisy[2]["image"].numpy())  # seeded: the same item each time
    noisy.set_epoch(1)
    assert not np.array_equal(
        noisy[2]["image"].numpy(),
        InspectionDataset(samples, ["good", "defect"], 32, 32, seed=1, sensor_noise=4.0)[2]["image"].numpy(),
    )


def test_sensor_noise_bound_is_checked(tmp_path):
    from onen.edge.errors import OnenError
    from onen.train.config import TrainConfig

    with pytest.raises(OnenError, match="--sensor-noise must be between 0 and 25"):
        TrainConfig(data=str(tmp_path), out=str(tmp_path / "r"), sensor_noise=-1).check()
