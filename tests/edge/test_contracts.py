"""The shared pieces every part relies on: image reading, resizing, regions, bundle hashing."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from onen.edge.bundle import Manifest, load_bundle, write_manifest
from onen.edge.errors import BundleError, DataError
from onen.edge.images import prepare_batch, read_image_rgb, read_mask, resize_to_input
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


def _area(image, height, width):
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def test_a_halving_is_the_exact_rounded_mean_of_each_2x2_block():
    image = np.random.default_rng(0).integers(0, 256, (192, 128, 3), dtype=np.uint8)  # 4x the input: one halving
    blocks = image.reshape(96, 2, 64, 2, 3).astype(int).sum(axis=(1, 3))
    halved = ((blocks + 2) // 4).astype(np.uint8)
    assert np.array_equal(resize_to_input(image, 48, 32), _area(halved, 48, 32))


def test_an_image_under_four_times_the_input_is_resized_in_one_step_as_before():
    """What keeps models trained before halving valid: such images (both real sets here) get the same pixels."""
    rng = np.random.default_rng(3)
    for shape, (height, width) in [((300, 300, 3), (128, 128)), ((574, 446), (144, 112)), ((512, 512, 3), (224, 224))]:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        assert np.array_equal(resize_to_input(image, height, width), _area(image, height, width))


def test_a_frame_made_of_blocks_of_the_input_shrinks_back_to_it_in_every_channel_count():
    """A 2448x2048-like frame, 16x the input per axis, halved three times: exactly the image it was blown up from."""
    small = np.random.default_rng(1).integers(0, 256, (144, 112, 3), dtype=np.uint8)
    frame = np.repeat(np.repeat(small, 16, axis=0), 16, axis=1)
    assert np.array_equal(resize_to_input(frame, 144, 112), small)
    assert np.array_equal(resize_to_input(np.ascontiguousarray(frame[..., 0]), 144, 112), small[..., 0])


def test_odd_frames_and_remainders_are_area_resized_and_thin_cracks_survive():
    image = np.random.default_rng(2).integers(0, 256, (1201, 1200, 3), dtype=np.uint8)  # odd: no halving
    assert np.array_equal(resize_to_input(image, 128, 128), _area(image, 128, 128))
    frame = np.zeros((1024, 1024), np.uint8)
    frame[:, 603] = 255  # a 1 px crack
    shrunk = resize_to_input(frame, 224, 224)
    assert np.array_equal(shrunk, _area(_area(frame, 512, 512), 224, 224))
    assert shrunk.max(axis=1).min() >= 0.4 * 255 * 224 / 1024  # its share of an output pixel, not lost by sampling


def test_a_bundle_resized_another_way_is_refused_with_the_key(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"onnx bytes")
    manifest = Manifest(name="m", version="1", family="test", input_height=8, input_width=8, class_names=["good"])
    write_manifest(tmp_path, manifest)
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert data["resize"] == "stretch-halving"
    data["resize"] = "stretch"  # a bundle of an onen that resized in one step
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r"key 'resize' is 'stretch'; this onen resizes by stretch-halving.*again"):
        load_bundle(tmp_path)


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
