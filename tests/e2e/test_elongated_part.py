"""A 500x1250 part (portrait, like a commutator) end to end with a non-square model input:
`onen train --size auto` -> `onen export` -> `onen calibrate` -> `onen run` on a video of such parts -> MQTT."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from support.daemon import calibrate_on_good_folder, results_of_a_video

from onen.edge.backends.onnxruntime_backend import OnnxRuntimeBackend
from onen.edge.bundle import load_bundle
from onen.edge.cli import main as onen

pytestmark = pytest.mark.slow

HEIGHT, WIDTH = 1250, 500
CRACK_PX = 28  # thick enough that `auto` keeps the model small here: the test is about geometry, not resolution


def elongated_part(rng: np.random.Generator, crack: bool) -> tuple[np.ndarray, np.ndarray]:
    """A textured portrait part (RGB) and its mask: with `crack`, a bright horizontal crack somewhere along it."""
    coarse = rng.normal(0, 1, (HEIGHT // 25, WIDTH // 25)).astype(np.float32)
    gray = 120 + 10 * cv2.resize(coarse, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)
    gray += rng.normal(0, 3, (HEIGHT, WIDTH)).astype(np.float32)
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    if crack:
        row = int(rng.integers(100, HEIGHT - 100 - CRACK_PX))
        start = int(rng.integers(20, WIDTH // 2))
        mask[row : row + CRACK_PX, start : start + int(rng.integers(120, WIDTH // 2))] = 1
        gray[mask > 0] += 80
    image = np.clip(gray, 0, 255).astype(np.uint8)
    return np.repeat(image[:, :, None], 3, axis=2), mask


def write_parts(folder: Path, seed: int, count: int, cracks: bool = True) -> Path:
    """PNG parts (every other one cracked when `cracks`) and a CSV manifest with their masks."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(count):
        cracked = cracks and index % 2 == 1
        image, mask = elongated_part(rng, cracked)
        name = f"part{index:03d}.png"
        cv2.imwrite(str(folder / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        row = {"image": name, "label": int(cracked), "class": "crack" if cracked else "good", "mask": ""}
        if cracked:
            row["mask"] = f"mask{index:03d}.png"
            cv2.imwrite(str(folder / row["mask"]), mask * 255)
        rows.append(row)
    manifest = folder / "data.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "label", "class", "mask"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def test_a_portrait_part_trains_exports_calibrates_and_runs_with_its_own_aspect_ratio(tmp_path):
    manifest = write_parts(tmp_path / "data", seed=0, count=40)
    run = tmp_path / "run"
    tiny = ["--patch", "8", "--dim", "32", "--depth", "2", "--batch-size", "8"]
    common = ["--data", str(manifest), "--supervision", "full", "--out", str(run)]
    assert onen(["train", *common, "--epochs", "3", "--teacher-epochs", "1", *tiny]) == 0
    geometry = json.loads((run / "config.json").read_text())["geometry"]
    assert geometry["chosen_by"] == "auto" and geometry["reason"]["decided_by"] == "defects"
    height, width = geometry["height"], geometry["width"]
    assert height > 2 * width and abs(width / height - WIDTH / HEIGHT) < 0.06  # the part's aspect, not a square
    assert height * CRACK_PX / HEIGHT >= 3 - 8 * CRACK_PX / HEIGHT  # the crack keeps ~3 px across

    bundle_dir = tmp_path / "bundle"
    assert onen(["export", "--run", str(run), "--out", str(bundle_dir)]) == 0
    bundle = load_bundle(bundle_dir)
    assert (bundle.manifest.input_height, bundle.manifest.input_width) == (height, width)
    assert bundle.manifest.training["geometry"]["reason"]["aspect_ratio"] == pytest.approx(WIDTH / HEIGHT, abs=0.01)
    outputs = OnnxRuntimeBackend(bundle).infer(np.zeros((2, height, width, 3), np.uint8))
    assert outputs.anomaly_map.shape == (2, 1, height, width)

    good = tmp_path / "good"
    write_parts(good, seed=5, count=32, cracks=False)
    (good / "data.csv").unlink()
    calibration = calibrate_on_good_folder(bundle_dir, good, tmp_path / "calibration" / "line.yaml")

    rng = np.random.default_rng(9)
    frames = [elongated_part(rng, crack=i % 2 == 1)[0] for i in range(8)]
    results = results_of_a_video(tmp_path, bundle_dir, frames, calibration)
    cracked = {r["seq"]: r["raw_score"] for r in results if r["seq"] % 2 == 1}
    good = {r["seq"]: r["raw_score"] for r in results if r["seq"] % 2 == 0}
    assert min(cracked.values()) > max(good.values()), (cracked, good)  # even 3 epochs see a 28 px crack
    for result in results:
        assert result["frame"] == {"width": WIDTH, "height": HEIGHT}  # regions are in the camera's pixels
        for region in result["regions"]:
            x, y, w, h = region["bbox"]
            assert 0 <= x and x + w <= WIDTH and 0 <= y and y + h <= HEIGHT, region
