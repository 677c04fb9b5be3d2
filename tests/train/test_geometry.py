"""`--size auto|N|HxW`: the model input follows the part's aspect ratio and its thinnest labelled defects."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from onen.edge.errors import OnenError
from onen.train.data.sample import Sample
from onen.train.geometry import MIN_PIXELS_ACROSS, PIXEL_BUDGET, parse_size, resolve_geometry


def test_sizes_parse_height_first_and_name_what_is_wrong():
    assert parse_size("auto", 16) == "auto"
    assert parse_size("128", 16) == (128, 128)
    assert parse_size(96, 16) == (96, 96)
    assert parse_size("512x192", 16) == (512, 192)
    for bad, said in (("512x190", "width must be a multiple of the patch size 16"), ("big", "HEIGHTxWIDTH")):
        with pytest.raises(OnenError, match=said):
            parse_size(bad, 16)
    with pytest.raises(OnenError, match="height must be a multiple .* >= 64"):
        parse_size("32x64", 16)


def _parts(folder, count: int, hw: tuple[int, int], crack_px: int | None) -> list[Sample]:
    """Elongated parts on disk; with crack_px, every other one carries a horizontal crack that thick and its mask."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(count):
        image = rng.integers(90, 140, (*hw, 3), dtype=np.uint8)
        path = folder / f"part{i}.png"
        cv2.imwrite(str(path), image)
        if crack_px is None or i % 2 == 0:
            samples.append(Sample(path, 0, "good"))
            continue
        mask = np.zeros(hw, np.uint8)
        row = hw[0] // 2
        mask[row : row + crack_px, hw[1] // 4 : hw[1] // 2] = 255
        mask_path = folder / f"part{i}_mask.png"
        cv2.imwrite(str(mask_path), mask)
        samples.append(Sample(path, 1, "crack", mask=mask_path))
    return samples


def test_auto_keeps_the_parts_aspect_and_enough_pixels_across_the_thinnest_defect(tmp_path):
    samples = _parts(tmp_path, 8, (1250, 500), crack_px=20)  # portrait part, 20 px cracks
    geometry = resolve_geometry("auto", samples, 16)
    assert geometry.chosen_by == "auto" and geometry.resize == "stretch-halving"
    assert geometry.reason["aspect_ratio"] == pytest.approx(0.4)
    assert abs(geometry.width / geometry.height - 0.4) < 0.05
    # 20 px natively must keep 3 px across: the height shrinks at most 20/3 times
    assert geometry.reason["decided_by"] == "defects"
    assert geometry.height * 20 / 1250 >= MIN_PIXELS_ACROSS - 16 * 20 / 1250  # within one patch of rounding
    assert geometry.height <= 1250 * MIN_PIXELS_ACROSS / 20 + 16
    assert "3 px across" in geometry.describe()


def test_thin_defects_ask_for_more_than_the_budget_and_the_budget_says_so(tmp_path):
    samples = _parts(tmp_path, 6, (1250, 500), crack_px=2)
    geometry = resolve_geometry("auto", samples, 16)
    assert geometry.reason["decided_by"] == "budget"
    assert geometry.height * geometry.width <= PIXEL_BUDGET * 1.15
    assert geometry.reason["height_for_defects"] > geometry.height
    assert "compute budget" in geometry.describe()


def test_without_masks_auto_keeps_the_native_resolution(tmp_path):
    samples = _parts(tmp_path, 4, (84, 180), crack_px=None)  # within the pixel budget
    geometry = resolve_geometry("auto", samples, 16)
    assert (geometry.height, geometry.width) == (80, 176)  # rounded to the patch, never upscaled past one patch
    assert geometry.reason["decided_by"] == "native" and "no pixel masks" in geometry.describe()


def test_a_given_size_is_used_as_given(tmp_path):
    geometry = resolve_geometry("512x192", [], 16)
    assert (geometry.height, geometry.width, geometry.chosen_by) == (512, 192, "given")
    with pytest.raises(OnenError, match="needs training images"):
        resolve_geometry("auto", [], 16)
