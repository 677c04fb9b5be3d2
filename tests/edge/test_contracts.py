"""The shared pieces every part relies on: image reading, resizing, regions, bundle hashing."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from onen.edge.bundle import Manifest, load_bundle, write_manifest
from onen.edge.errors import BundleError, DataError
from onen.edge.images import prepare_batch, read_image_rgb, read_mask
from onen.edge.regions import apply_aoi, find_regions


def test_read_image_gray_and_16bit_become_rgb_uint8(tmp_path):
    gray = (np.arange(40 * 30) % 256).astype(np.uint8).reshape(30, 40)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    cv2.imwrite(str(tmp_path / "w.png"), gray.astype(np.uint16) * 256)
    for name in ("g.png", "w.png"):
        image = read_image_rgb(tmp_path / name)
        assert image.shape == (30, 40, 3) and image.dtype == np.uint8
        assert np.array_equal(image[:, :, 0], gray)


def test_bgr_file_becomes_rgb(tmp_path):
    bgr = np.zeros((8, 8, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV order
    cv2.imwrite(str(tmp_path / "b.png"), bgr)
    assert read_image_rgb(tmp_path / "b.png")[0, 0].tolist() == [0, 0, 255]


def test_unreadable_image_and_wrong_mask_size_name_the_file(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match="bad.jpg"):
        read_image_rgb(tmp_path / "bad.jpg")
    cv2.imwrite(str(tmp_path / "m.png"), np.zeros((10, 12), np.uint8))
    with pytest.raises(DataError, match="m.png.*size of its image"):
        read_mask(tmp_path / "m.png", expected_hw=(10, 13))


def test_prepare_batch_shape():
    frames = [np.zeros((100, 50, 3), np.uint8), np.zeros((20, 30, 3), np.uint8)]
    assert prepare_batch(frames, 32, 48).shape == (2, 32, 48, 3)


def test_regions_respect_threshold_area_and_aoi():
    heat = np.zeros((64, 64), np.float32)
    heat[10:20, 10:20] = 0.9  # 100 px blob
    heat[40:42, 40:42] = 0.8  # 4 px speck
    regions = find_regions(heat, 0.5, min_area=10)
    assert len(regions) == 1
    assert regions[0].bbox == [10, 10, 10, 10] and regions[0].area == 100
    assert regions[0].peak == pytest.approx(0.9)
    aoi = np.ones_like(heat, bool)
    aoi[:32] = False
    assert find_regions(apply_aoi(heat, aoi), 0.5, min_area=1)[0].bbox == [40, 40, 2, 2]


def test_bundle_hashes_detect_tampering(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"onnx bytes")
    write_manifest(
        tmp_path,
        Manifest(name="m", version="1", family="test", input_height=8, input_width=8, class_names=["good", "scratch"]),
    )
    bundle = load_bundle(tmp_path)
    assert bundle.manifest.class_names == ["good", "scratch"]
    assert json.loads((tmp_path / "manifest.json").read_text())["files"]["model.onnx"] == bundle.onnx_sha256
    (tmp_path / "model.onnx").write_bytes(b"changed")
    with pytest.raises(BundleError, match="does not match"):
        load_bundle(tmp_path)
