"""Student losses against hand-made cases: progressive weights, focal loss, AOI guidance, distillation."""

from __future__ import annotations

import pytest
import torch

from onen.train.losses import (
    aoi_guidance_loss,
    attention_overlap_loss,
    feature_distillation_loss,
    focal_loss_with_logits,
    logit_distillation_loss,
    masked_cross_entropy,
    out_of_aoi_mass,
    outside_peak_loss,
    progressive_focal_loss,
    progressive_weights,
)


def test_progressive_weights_increase_with_depth_and_sum_to_one():
    weights = progressive_weights(4)
    assert torch.allclose(weights, torch.tensor([1, 2, 3, 4]) / 10.0)
    assert torch.all(weights[1:] > weights[:-1])
    assert float(weights.sum()) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        progressive_weights(0)


def _square_target() -> torch.Tensor:
    target = torch.zeros(1, 16, 16)
    target[:, 4:12, 4:12] = 1
    return target


def test_focal_loss_perfect_map_near_zero_inverted_map_large():
    target = _square_target()
    perfect = (target * 2 - 1) * 12  # logits +-12 -> p = 1 - 6e-6
    inverted = -perfect
    assert float(focal_loss_with_logits(perfect, target)) < 1e-6
    assert float(focal_loss_with_logits(inverted, target)) > 10
    uncertain = torch.zeros_like(target)  # p = 0.5 everywhere: BCE ln2 times (0.5)^2
    assert float(focal_loss_with_logits(uncertain, target)) == pytest.approx(0.25 * 0.6931, rel=1e-3)


def test_focal_loss_down_weights_easy_pixels_relative_to_bce():
    target = torch.tensor([1.0, 1.0])
    logits = torch.tensor([3.0, -3.0])  # one easy, one hard
    losses = focal_loss_with_logits(logits, target, reduction="none")
    assert float(losses[0]) < 0.01 * float(losses[1])


def test_progressive_focal_loss_perfect_layers_zero_and_ignores_invalid_images():
    target = torch.cat([_square_target(), torch.ones(1, 16, 16)])
    coarse = torch.nn.functional.avg_pool2d(target[:, None], 4)[:, 0]  # 4x4 grid
    layers = [(coarse * 2 - 1) * 30 for _ in range(3)]
    final = ((target * 2 - 1) * 30)[:, None]
    valid = torch.tensor([True, False])
    # layer maps upsampled bilinearly blur the square's edge, so "near zero" is relative to an inverted map
    good = float(progressive_focal_loss(layers, final, target, valid))
    bad = float(progressive_focal_loss([-x for x in layers], -final, target, valid))
    assert good < 0.05 * bad
    # the second image (invalid) must not matter
    target_changed = target.clone()
    target_changed[1] = 0
    assert float(progressive_focal_loss(layers, final, target_changed, valid)) == pytest.approx(good)


def test_deeper_layers_count_more():
    target = _square_target()
    right = (torch.nn.functional.avg_pool2d(target[:, None], 4)[:, 0] * 2 - 1) * 10
    wrong = -right
    final = ((target * 2 - 1) * 10)[:, None]
    shallow_wrong = float(progressive_focal_loss([wrong, right, right], final, target))
    deep_wrong = float(progressive_focal_loss([right, right, wrong], final, target))
    assert deep_wrong > 2.5 * shallow_wrong


def test_aoi_penalty_zero_inside_large_outside():
    aoi = torch.zeros(1, 32, 32)
    aoi[:, 8:24, 8:24] = 1
    inside = torch.zeros(1, 8, 8)
    inside[:, 3:5, 3:5] = 0.2  # all attention mass in the AOI's centre
    outside = torch.zeros(1, 8, 8)
    outside[:, 0, 0] = 0.8  # all attention mass in a corner far from the AOI
    assert float(attention_overlap_loss(inside, aoi)[0]) == pytest.approx(0.0, abs=1e-5)
    assert float(attention_overlap_loss(outside, aoi)[0]) > 10
    assert float(out_of_aoi_mass(inside, aoi)[0]) == pytest.approx(0.0)
    assert float(out_of_aoi_mass(outside, aoi)[0]) == pytest.approx(1.0)
    dark = torch.zeros(1, 1, 32, 32)
    assert float(aoi_guidance_loss([inside, inside], aoi, dark)) == pytest.approx(0.0, abs=1e-5)
    lit_outside = 1 - aoi[:, None]
    assert float(aoi_guidance_loss([inside, inside], aoi, lit_outside)) == pytest.approx(1.0)


def test_outside_peak_loss_sees_one_bright_spot_beside_the_part():
    """The score reads the map's maximum: one bright spot outside the AOI must cost as much as a lit outside,
    a spot inside the AOI nothing, and without an AOI (all inside) the term is zero."""
    aoi = torch.zeros(2, 32, 32)
    aoi[:, 8:24, 8:24] = 1
    dark = torch.full((2, 1, 32, 32), -8.0)
    spot_outside, spot_inside = dark.clone(), dark.clone()
    spot_outside[:, 0, 1:4, 1:4] = 6.0  # 9 pixels: more than the top 1 % (10 of 1024 pixels)
    spot_inside[:, 0, 15, 15] = 6.0
    assert float(outside_peak_loss(dark, aoi)) < 1e-3
    assert float(outside_peak_loss(spot_inside, aoi)) < 1e-3
    assert float(outside_peak_loss(spot_outside, aoi)) > 4.0
    outside = 1 - aoi
    mean_outside = float((torch.sigmoid(spot_outside)[:, 0] * outside).sum() / outside.sum())
    assert mean_outside < 0.02  # the mean outside (aoi_guidance_loss) barely notices the same spot
    assert float(outside_peak_loss(spot_outside, torch.ones(2, 32, 32))) == 0.0
    with torch.enable_grad():
        logits = spot_outside.clone().requires_grad_(True)
        outside_peak_loss(logits, aoi).backward()
    assert float(logits.grad[0, 0, 2, 2]) > 0 and float(logits.grad[0, 0, 15, 15]) == 0.0


def test_distillation_losses():
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    assert float(logit_distillation_loss(logits, logits)) == pytest.approx(0.0, abs=1e-6)
    assert float(logit_distillation_loss(logits, torch.tensor([[-2.0, 3.0, 0.0]]))) > 0.5
    assert float(logit_distillation_loss(torch.zeros(2, 1), torch.ones(2, 1))) == 0.0  # no classes, nothing to distil
    features = torch.randn(2, 8, 2, 2)
    projected = torch.nn.functional.interpolate(features, size=(4, 4), mode="bilinear", align_corners=False)
    assert float(feature_distillation_loss(projected, features)) == pytest.approx(0.0, abs=1e-5)
    assert float(feature_distillation_loss(-projected, features)) == pytest.approx(2.0, abs=1e-4)


def test_masked_cross_entropy_ignores_unknown_class():
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    assert float(masked_cross_entropy(logits, torch.tensor([0, -1]))) < 0.01
    assert float(masked_cross_entropy(logits, torch.tensor([-1, -1]))) == 0.0


def test_final_map_focal_weighs_defect_pixels_by_area_across_the_batch():
    """The final map: one mean over all defect pixels of the batch (as pixel AUROC counts them), so missing a large
    region costs more than missing a small one; a good image (empty target) only adds background pixels."""
    target = torch.zeros(3, 32, 32)
    target[0, 10:12, 10:12] = 1  # 4 px defect
    target[1, 4:28, 4:28] = 1  # 576 px defect; image 2 is good
    found = torch.where(target > 0, torch.full_like(target, 4.0), torch.full_like(target, -4.0))
    miss_small, miss_large = found.clone(), found.clone()
    miss_small[0] = -4.0
    miss_large[1] = -4.0
    loss = {
        name: float(progressive_focal_loss([], logits.unsqueeze(1), target))
        for name, logits in (("found", found), ("small", miss_small), ("large", miss_large))
    }
    assert loss["found"] < loss["small"] < loss["large"]
    assert loss["large"] > 20 * loss["small"]
    good_only = float(progressive_focal_loss([], found[2:].unsqueeze(1), target[2:]))
    assert good_only < 0.01


def test_layer_maps_are_balanced_per_image_so_small_defects_weigh_as_much_as_large_ones():
    target = torch.zeros(2, 32, 32)
    target[0, 10:12, 10:12] = 1  # 4 px defect
    target[1, 4:28, 4:28] = 1  # 576 px defect
    missed = torch.full((2, 8, 8), -4.0)  # the layer map dark everywhere
    perfect = torch.full((2, 1, 32, 32), -30.0) + 60.0 * target.unsqueeze(1)  # the final map costs ~0
    per_layer = [
        float(progressive_focal_loss([missed[i : i + 1]], perfect[i : i + 1], target[i : i + 1])) for i in range(2)
    ]
    assert per_layer[0] == pytest.approx(per_layer[1], rel=0.05)
