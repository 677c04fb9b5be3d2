"""CEOD (seed 001, eq. 7-8) against hand-made cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from onen.train.losses_ceod import (
    CLIP_EPS,
    ceod_loss,
    classification_loss,
    defect_cross_entropy,
    overlap_distance,
    spread_mask,
)


def _square(size: int, top: int, left: int, side: int) -> torch.Tensor:
    mask = torch.zeros(1, size, size)
    mask[0, top : top + side, left : left + side] = 1.0
    return mask


def test_kernel_of_half_on_a_single_pixel():
    mask = torch.zeros(1, 5, 5)
    mask[0, 2, 2] = 1.0
    spread = spread_mask(mask)[0]
    expected = torch.zeros(5, 5)
    expected[1:4, 1:4] = 0.5
    assert torch.equal(spread, expected)


def test_kernel_of_half_on_a_square_is_capped_at_one():
    spread = spread_mask(_square(7, 2, 2, 3))[0]
    assert torch.all(spread[2:5, 2:5] == 1.0)  # inside: 4.5 raw, capped
    assert spread[1, 3] == 1.0 and spread[3, 1] == 1.0  # next to an edge: 3 neighbours * 0.5
    assert spread[1, 1] == 0.5 and spread[5, 5] == 0.5  # diagonal corner: one neighbour
    assert spread[0, 0] == 0.0 and spread[3, 6] == 0.0  # two pixels away: nothing


def test_heat_map_inside_the_aoi_gives_zero():
    aoi = _square(32, 4, 4, 20)
    cam = _square(32, 10, 10, 6) * 0.8
    od = overlap_distance(cam, aoi)
    assert od.item() == pytest.approx(-math.log(1 - CLIP_EPS), abs=1e-6)


def test_aoi_inside_a_larger_heat_map_also_gives_zero():
    # Overlap coefficient: either set being a subset of the other gives 1.
    od = overlap_distance(_square(32, 0, 0, 32), _square(32, 8, 8, 8))
    assert od.item() == pytest.approx(0.0, abs=1e-6)


def test_disjoint_heat_map_gives_a_large_value():
    od = overlap_distance(_square(32, 24, 24, 6), _square(32, 2, 2, 6))
    assert od.item() == pytest.approx(-math.log(CLIP_EPS), rel=1e-5)
    assert od.item() > 15


def test_distance_near_is_penalised_less_than_far():
    aoi = _square(32, 8, 8, 8)
    touching = _square(32, 8, 16, 4)  # starts in the first column outside the AOI: the 0.5 ring
    far = _square(32, 8, 26, 4)
    assert overlap_distance(touching, aoi).item() < overlap_distance(far, aoi).item()


def test_half_inside_gives_log_two():
    aoi = _square(32, 0, 0, 16)
    aoi[:, 16:, :] = 0
    cam = torch.zeros(1, 32, 32)
    cam[0, 4:8, 12:20] = 1.0  # columns 12..15 inside, 16 in the ring, 17..19 outside
    ratio = (cam * spread_mask(aoi)).sum() / torch.minimum(cam.sum(), spread_mask(aoi).sum())
    assert overlap_distance(cam, aoi).item() == pytest.approx(-math.log(ratio.item()), rel=1e-5)
    assert 0.3 < overlap_distance(cam, aoi).item() < 0.7


def test_low_resolution_heat_map_is_resized_to_the_mask():
    cam = torch.zeros(1, 4, 4)
    cam[0, 0, 0] = 1.0
    far = overlap_distance(cam, _square(64, 40, 40, 24))
    near = overlap_distance(cam, _square(64, 0, 0, 24))
    assert near.item() < 0.1 < 10 < far.item()


def test_good_images_give_plain_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(4, 3)
    targets = torch.tensor([0, 0, 0, 0])
    cam = torch.rand(4, 8, 8)
    disjoint = torch.zeros(4, 16, 16)
    loss = ceod_loss(logits, targets, cam, disjoint, is_defect=torch.zeros(4, dtype=torch.bool), omega=1.0)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-6)


def test_defective_image_adds_omega_times_od():
    torch.manual_seed(0)
    logits = torch.randn(2, 3)
    targets = torch.tensor([1, 0])
    cam = torch.stack([_square(16, 0, 0, 4)[0], _square(16, 0, 0, 4)[0]])
    mask = torch.stack([_square(16, 10, 10, 4)[0], _square(16, 10, 10, 4)[0]])
    is_defect = torch.tensor([True, False])
    omega = 0.001
    loss = ceod_loss(logits, targets, cam, mask, is_defect, omega=omega)
    expected = F.cross_entropy(logits, targets) + omega * (-math.log(CLIP_EPS)) / 2  # mean over N = 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_unknown_defect_class_counts_as_any_defect():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 1.0]])
    targets = torch.tensor([-1, 2])
    ce = defect_cross_entropy(logits, targets)
    p = torch.softmax(logits, dim=1)
    assert ce[0].item() == pytest.approx(-math.log(1 - p[0, 0].item()), rel=1e-5)
    assert ce[1].item() == pytest.approx(-math.log(p[1, 2].item()), rel=1e-5)
    assert classification_loss(logits, targets).item() == pytest.approx(ce.mean().item())


def test_od_gradient_pulls_the_heat_map_into_the_aoi():
    aoi = _square(16, 0, 0, 8)
    cam = torch.zeros(1, 16, 16)
    cam[0, 4:6, 4:14] = 0.5  # a compact detection, half of it outside the AOI
    cam.requires_grad_(True)
    overlap_distance(cam, aoi).sum().backward()
    grad = cam.grad[0]
    assert grad[4, 5] < 0 < grad[4, 12]  # descending raises heat inside, lowers it outside
