"""AOI authoring: polygons and reference images -> PNG masks at camera resolution, with previews."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from onen.calibration.aoi import load_polygons, mask_from_polygons, mask_from_reference
from onen.edge.cli import main
from onen.edge.errors import DataError
from onen.edge.images import read_image_rgb, read_mask


def _reference(path):
    """A bright plate with a dark hole on a dark, noisy background (BGR file)."""
    image = np.full((240, 320, 3), 25, np.uint8)
    cv2.rectangle(image, (60, 40), (259, 199), (205, 200, 190), -1)
    cv2.circle(image, (160, 120), 20, (25, 25, 25), -1)
    image = np.clip(image + np.random.default_rng(0).normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    cv2.imwrite(str(path), image)
    return path


def test_polygon_file_to_mask_with_exclusion(tmp_path):
    spec_path = tmp_path / "aoi.yaml"
    spec_path.write_text(
        "polygons:\n  - [[10, 10], [90, 10], [90, 50], [10, 50]]\nexclude:\n  - [[40, 20], [60, 20], [60, 40], [40, "
        "40]]\nsize: 100x60\n"
    )
    spec = load_polygons(spec_path)
    mask = mask_from_polygons(spec, spec.size)
    assert mask.shape == (60, 100)
    assert mask[30, 20] and mask[12, 88] and not mask[30, 50] and not mask[5, 5]
    assert abs(int(mask.sum()) - (81 * 41 - 21 * 21)) < 100


def test_onen_aoi_polygon_json_writes_mask_and_preview(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps([[0, 0], [63, 0], [63, 31], [0, 31]]))
    assert (
        main(["aoi", "--polygon", str(tmp_path / "p.json"), "--size", "64x48", "--out", str(tmp_path / "cam.aoi.png")])
        == 0
    )
    mask = read_mask(tmp_path / "cam.aoi.png")
    assert mask.shape == (48, 64) and mask[:30].all() and not mask[33:].any()
    preview = read_image_rgb(tmp_path / "cam.aoi.preview.png")
    assert preview.shape == (48, 64, 3)


def test_onen_aoi_reference_finds_the_part_fills_holes_and_erodes(tmp_path):
    reference = _reference(tmp_path / "ref.png")
    assert main(["aoi", "--reference", str(reference), "--out", str(tmp_path / "a.png")]) == 0
    assert main(["aoi", "--reference", str(reference), "--erode", "5", "--out", str(tmp_path / "b.png")]) == 0
    full, eroded = read_mask(tmp_path / "a.png"), read_mask(tmp_path / "b.png")
    assert full.shape == (240, 320)
    assert full[120, 160], "the dark hole inside the part belongs to the AOI"
    assert not full[10, 10] and full[45, 65]
    part_area = 200 * 160
    assert abs(int(full.sum()) - part_area) < 0.03 * part_area
    assert eroded.sum() < full.sum() and not eroded[42, 62] and eroded[50, 70]
    assert (tmp_path / "b.preview.png").is_file()


def test_reference_threshold_invert_picks_a_dark_part():
    image = np.full((50, 60, 3), 220, np.uint8)
    image[10:40, 15:45] = 30
    mask = mask_from_reference(image, threshold=128, invert=True, blur=0)
    assert mask.sum() == 30 * 30 and mask[20, 20]


def test_bad_inputs_name_the_file_and_what_was_expected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("polygons: [[0, 0], [1, 1]]\n")
    with pytest.raises(DataError, match="bad.yaml.*at least 3"):
        load_polygons(bad)
    outside = tmp_path / "outside.yaml"
    outside.write_text("polygon: [[0, 0], [500, 0], [0, 10]]\n")
    with pytest.raises(DataError, match="outside.yaml.*outside the 100x100 image"):
        mask_from_polygons(load_polygons(outside), (100, 100), str(outside))
    typo = tmp_path / "typo.yaml"
    typo.write_text("polygns: [[0, 0], [5, 0], [0, 5]]\n")
    with pytest.raises(DataError, match="typo.yaml: unknown key"):
        load_polygons(typo)
    (tmp_path / "nosize.yaml").write_text("[[0, 0], [5, 0], [0, 5]]\n")
    assert main(["aoi", "--polygon", str(tmp_path / "nosize.yaml"), "--out", str(tmp_path / "x.png")]) == 2
