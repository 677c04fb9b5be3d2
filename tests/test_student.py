"""The OneN student: the three bundle outputs and the per-layer attention maps, for C == 1 and C > 1."""
from __future__ import annotations

import pytest
import torch

from train.models.onen_vit import OneNConfig, OneNStudent


def _images(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("num_classes", [1, 4])
def test_outputs_shapes_and_ranges(num_classes):
    torch.manual_seed(0)
    cfg = OneNConfig(num_classes=num_classes, input_height=64, input_width=96, patch=16, dim=32, depth=3, heads=2, teacher_dim=24)
    model = OneNStudent(cfg).eval()
    with torch.no_grad():
        out = model(_images(3, 64, 96))
    assert out.score.shape == (3,)
    assert out.anomaly_map.shape == (3, 1, 64, 96)
    assert out.class_logits.shape == (3, num_classes)
    assert 0 <= float(out.score.min()) and float(out.score.max()) <= 1
    assert 0 <= float(out.anomaly_map.min()) and float(out.anomaly_map.max()) <= 1
    assert out.projected.shape == (3, 24, 4, 6)
    assert out.tokens.shape == (3, 4 * 6, 32)


def test_attention_maps_per_layer_are_cls_distributions():
    cfg = OneNConfig(num_classes=3, input_height=64, input_width=64, patch=8, dim=32, depth=4, heads=4)
    model = OneNStudent(cfg).eval()
    with torch.no_grad():
        out = model(_images(2, 64, 64))
    assert len(out.attention_maps) == 4 and len(out.layer_map_logits) == 4
    for attention in out.attention_maps:
        assert attention.shape == (2, 8, 8)
        assert float(attention.min()) >= 0
        # CLS->patch attention: the rest of the row went to the CLS token itself, so the sum is below 1
        sums = attention.flatten(1).sum(1)
        assert torch.all(sums <= 1 + 1e-5) and torch.all(sums > 0)
    for layer_map in out.layer_maps():
        assert layer_map.shape == (2, 8, 8) and 0 <= float(layer_map.min()) <= float(layer_map.max()) <= 1


def test_gradients_reach_attention_from_the_map():
    cfg = OneNConfig(num_classes=2, input_height=32, input_width=32, patch=8, dim=16, depth=2, heads=2)
    model = OneNStudent(cfg)
    with torch.enable_grad():            # independent of what earlier code in the session switched off
        out = model(_images(2, 32, 32))
        out.anomaly_map.mean().backward()
    assert model.blocks[0].attn.qkv.weight.grad is not None
    assert float(model.blocks[0].attn.qkv.weight.grad.abs().sum()) > 0


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="multiple of patch"):
        OneNStudent(OneNConfig(input_height=100, input_width=64, patch=16))
    with pytest.raises(ValueError, match="activation"):
        OneNStudent(OneNConfig(activation="swish"))
