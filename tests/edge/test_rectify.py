"""Perspective rectification: corners -> upright rectangle, the same in calibration and the daemon."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from onen.edge.errors import DataError
from onen.edge.rectify import Rectification


def _pattern(height: int = 120, width: int = 160) -> np.ndarray:
    """A part with features everywhere, so a wrong warp cannot go unnoticed."""
    rng = np.random.default_rng(0)
    base = cv2.resize(
        rng.uniform(0, 255, (height // 8, width // 8, 3)).astype(np.float32),
        (width, height),
        interpolation=cv2.INTER_CUBIC,
    )
    image = np.clip(base, 0, 255).astype(np.uint8)
    cv2.putText(image, "OK", (40, 80), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (255, 255, 255), 4)
    return image


def test_round_trip_recovers_the_upright_part():
    part = _pattern()
    height, width = part.shape[:2]
    # Seen by a tilted camera: the part's corners land on a trapezoid inside a 320x240 frame.
    corners = np.float32([[60, 40], [250, 55], [270, 200], [40, 190]])
    upright = np.float32([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]])
    to_camera = cv2.getPerspectiveTransform(upright, corners)
    frame = cv2.warpPerspective(part, to_camera, (320, 240), flags=cv2.INTER_LINEAR)

    rect = Rectification(corners=tuple(map(tuple, corners.tolist())), width=width, height=height)
    restored = rect.apply(frame)
    assert restored.shape == part.shape
    inner = (slice(4, -4), slice(4, -4))  # borders suffer from interpolation at the trapezoid's edge
    error = np.abs(restored[inner].astype(np.float32) - part[inner].astype(np.float32))
    assert float(error.mean()) < 6.0, f"mean abs error {error.mean():.2f} grey levels"
    # The homography maps each given corner onto the rectangle's corner.
    mapped = cv2.perspectiveTransform(corners[None], rect.matrix())[0]
    assert np.allclose(mapped, upright, atol=1e-3)


def test_size_from_corners_and_mask_stays_binary():
    rect = Rectification(corners=((10, 10), (110, 10), (110, 60), (10, 60)))
    assert rect.size == (101, 51)
    mask = np.zeros((80, 130), bool)
    mask[20:40, 30:70] = True
    warped = rect.apply_mask(mask)
    assert warped.dtype == bool and warped.shape == (51, 101)
    assert set(np.unique(warped)) <= {False, True}
    assert 700 <= warped.sum() <= 900  # 20x40 px region, shifted by (-10, -10), scaled by ~1


def test_cli_form_and_dict_round_trip():
    rect = Rectification.parse("0,0, 99,0, 99,49, 0,49", size=(64, 32))
    assert rect.size == (64, 32)
    assert Rectification.from_dict(rect.to_dict()) == rect


@pytest.mark.parametrize(
    "text, message",
    [
        ("1,2,3", "expected 8 numbers"),
        ("a,b,c,d,e,f,g,h", "expected 8 numbers"),
        ("0,0, 0,49, 99,49, 99,0", "not a convex quadrilateral"),  # counter-clockwise order
        ("0,0, 99,49, 99,0, 0,49", "not a convex quadrilateral"),  # crossed edges
        ("0,0, 50,0, 100,0, 0,49", "not a convex quadrilateral"),  # three on one line
    ],
)
def test_bad_corners_are_refused_with_the_expected_order(text, message):
    with pytest.raises(DataError, match=message):
        Rectification.parse(text)


def test_bad_dict_names_the_key():
    with pytest.raises(DataError, match="cam.yaml: key 'rectification'.*4 \\[x, y\\] points"):
        Rectification.from_dict({"corners": [[0, 0], [1, 1]]}, "cam.yaml: key 'rectification'")


def test_corners_found_on_a_reference_image_and_ordered(tmp_path):
    from onen.calibration.aoi import find_part_corners, mask_from_reference, order_corners
    from onen.edge.cli import main

    truth = np.float32([[70, 40], [250, 60], [270, 200], [50, 190]])
    shuffled = truth[[2, 0, 3, 1]]
    assert np.array_equal(order_corners(shuffled), truth)
    image = np.full((240, 320, 3), 30, np.uint8)
    cv2.fillPoly(image, [truth.astype(np.int32)], (200, 200, 200))
    found = find_part_corners(mask_from_reference(image))
    assert np.abs(found - truth).max() <= 2.5
    cv2.imwrite(str(tmp_path / "tilted.png"), image)
    assert (
        main(
            [
                "rectify",
                "--reference",
                str(tmp_path / "tilted.png"),
                "--size",
                "180x140",
                "--out",
                str(tmp_path / "r.png"),
            ]
        )
        == 0
    )
    rectified = cv2.imread(str(tmp_path / "r.png"))
    assert rectified.shape == (140, 180, 3) and rectified[5:-5, 5:-5].min() > 150  # only the part, edge to edge
    assert (tmp_path / "r.corners.png").is_file()
    round_blob = np.zeros((100, 100), bool)
    cv2.circle(round_blob.view(np.uint8), (50, 50), 30, 1, -1)
    with pytest.raises(DataError, match="not a quadrilateral"):
        find_part_corners(round_blob)
