"""The OneN student: the three bundle outputs and the per-layer attention maps, for C == 1 and C > 1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from onen.train.models.onen_vit import FineMapHead, Lite0Stem, OneNConfig, OneNStudent


def _images(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("num_classes", [1, 4])
def test_outputs_shapes_and_ranges(num_classes):
    torch.manual_seed(0)
    cfg = OneNConfig(
        num_classes=num_classes, input_height=64, input_width=96, patch=16, dim=32, depth=3, heads=2, teacher_dim=24
    )
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
    with torch.enable_grad():  # independent of what earlier code in the session switched off
        out = model(_images(2, 32, 32))
        out.anomaly_map.mean().backward()
    assert model.blocks[0].attn.qkv.weight.grad is not None
    assert float(model.blocks[0].attn.qkv.weight.grad.abs().sum()) > 0


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="multiple of patch"):
        OneNStudent(OneNConfig(num_classes=2, input_height=100, input_width=64, patch=16))
    with pytest.raises(ValueError, match="patch must be one of 8, 16, got 4"):
        OneNStudent(OneNConfig(num_classes=2, input_height=64, input_width=64, patch=4, stem="conv"))
    with pytest.raises(ValueError, match="stem must be one of lite0, conv"):
        OneNStudent(OneNConfig(num_classes=2, input_height=64, input_width=64, stem="resnet"))


def test_the_student_is_built_from_the_run_settings():
    """OneNConfig.from_train: one source for the student's sizes (TrainConfig), whose defaults OneNConfig shares."""
    from onen.train.config import TrainConfig

    cfg = TrainConfig(data="d", out="o", supervision="none", class_names=["good", "crack"])
    cfg.geometry = {"height": 96, "width": 64}
    built = OneNConfig.from_train(cfg, teacher_dim=112)
    assert (built.num_classes, built.input_height, built.input_width) == (2, 96, 64)
    assert (built.patch, built.dim, built.depth, built.heads, built.stem) == (16, 96, 3, 4, "lite0")
    assert built.good_features and built.class_distill and built.teacher_dim == 112
    plain = OneNConfig(num_classes=2, input_height=96, input_width=64)
    assert (plain.depth, plain.dim, plain.patch) == (cfg.depth, cfg.dim, cfg.patch) == (3, 96, 16)


def test_untrained_fine_map_head_starts_from_the_attention_map():
    """The fine head's last conv starts at zero: before training it returns the coarse (attention) logit upsampled
    to the stride-4 grid, whatever the stem features are."""
    torch.manual_seed(0)
    head = FineMapHead(in_channels=24, width=16)
    features, coarse = torch.randn(2, 24, 16, 16), torch.randn(2, 1, 4, 4)
    expected = torch.nn.functional.interpolate(coarse, size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.equal(head(features, coarse), expected)
    model = OneNStudent(OneNConfig(num_classes=3, input_height=64, input_width=64, patch=16, dim=32, depth=2, heads=2))
    assert model.stem.fine_channels_in == 24  # the head reads the Lite0 stride-4 features


@pytest.mark.parametrize("stem", ["lite0", "conv"])
def test_fine_map_head_resolves_detail_below_one_token(stem):
    """With the head active, the map varies inside a token cell differently from a bilinear upsampling of the token
    grid,
    and the map's gradient reaches the stride-4 stem features and the attention."""
    torch.manual_seed(1)
    cfg = OneNConfig(num_classes=2, input_height=64, input_width=64, patch=16, dim=32, depth=2, heads=2, stem=stem)
    model = OneNStudent(cfg)
    torch.nn.init.normal_(model.fine_head.net[-1].weight, std=0.5)
    with torch.enable_grad():
        out = model(_images(2, 64, 64))
        out.anomaly_map.sum().backward()
    assert out.map_logits.shape == (2, 1, 64, 64)
    first_stem_conv = next(m for m in model.stem.modules() if isinstance(m, torch.nn.Conv2d))
    assert float(first_stem_conv.weight.grad.abs().sum()) > 0
    assert float(model.blocks[-1].attn.qkv.weight.grad.abs().sum()) > 0
    grid = torch.nn.functional.adaptive_avg_pool2d(out.map_logits.detach(), (4, 4))
    smooth = torch.nn.functional.interpolate(grid, size=(64, 64), mode="bilinear", align_corners=False)
    assert float((out.map_logits.detach() - smooth).abs().max()) > 1e-3


def test_class_head_reading_map_pooled_tokens_and_stem_features():
    """The class head reads the CLS token, the tokens pooled where the coarse map is bright and the stride-4 stem
    features pooled where the refined map is bright."""
    model = OneNStudent(
        OneNConfig(num_classes=5, input_height=64, input_width=64, patch=16, dim=32, depth=2, heads=2)
    ).eval()
    assert model.class_head.in_features == 64 + 24  # + the Lite0 stem's 24 stride-4 channels
    with torch.no_grad():
        out = model(_images(3, 64, 64))
    assert out.class_logits.shape == (3, 5)
    where = torch.softmax(torch.zeros(3, 16), dim=1).unsqueeze(1)  # a flat map pools the plain mean
    pooled = model._class_input(
        out.cls_token, out.tokens, torch.zeros(3, 1, 4, 4), torch.zeros(3, 1, 16, 16), out.stem_features
    )
    torch.testing.assert_close(pooled[:, 32:64], torch.matmul(where, out.tokens).squeeze(1))
    torch.testing.assert_close(pooled[:, 64:], out.stem_features.mean(dim=(2, 3)))


SAVED = OneNConfig(num_classes=3, input_height=64, input_width=64, patch=16, dim=32, depth=2, heads=2).to_dict()


def test_a_checkpoint_config_round_trips():
    assert OneNConfig.from_dict(json.loads(json.dumps(SAVED))) == OneNConfig(**SAVED)


@pytest.mark.parametrize(("key", "value"), [("class_pool", "cls+map+fine"), ("score_map", "fine"), ("dropout", 0.0)])
def test_a_checkpoint_holding_a_removed_option_is_refused_even_with_the_value_this_version_builds(key, value):
    from onen.train.runs import RunError

    expected = rf"^run/student_best.pt: model_config: unknown key\(s\) {key}; .*train it again"
    with pytest.raises(RunError, match=expected):
        OneNConfig.from_dict({**SAVED, key: value}, "run/student_best.pt: model_config")


def test_a_checkpoint_config_with_unknown_or_missing_keys_is_refused():
    from onen.train.runs import RunError

    with pytest.raises(RunError, match=r"s.pt: model_config: unknown key\(s\) layer_scale; expected class_distill"):
        OneNConfig.from_dict({**SAVED, "layer_scale": 1.0}, "s.pt: model_config")
    with pytest.raises(RunError, match=r"s.pt: model_config: missing key\(s\) depth, stem"):
        OneNConfig.from_dict({k: v for k, v in SAVED.items() if k not in ("depth", "stem")}, "s.pt: model_config")


def test_map_is_gated_by_the_score():
    """anomaly_map = sigmoid(map logit) * score ** MAP_GATE: the same map logits, dimmed on parts the score calls
    good."""
    from onen.train.models.onen_vit import MAP_GATE

    torch.manual_seed(2)
    cfg = OneNConfig(num_classes=3, input_height=64, input_width=64, patch=16, dim=32, depth=2, heads=2)
    assert MAP_GATE == 0.25
    model = OneNStudent(cfg).eval()
    with torch.no_grad():
        out = model(_images(4, 64, 64))
    ungated = torch.sigmoid(out.map_logits)
    torch.testing.assert_close(out.anomaly_map, ungated * out.score.reshape(4, 1, 1, 1) ** 0.25)
    assert torch.all(out.anomaly_map <= ungated + 1e-7)


def test_class_distill_projects_the_class_input_for_training_only():
    cfg = OneNConfig(
        num_classes=4,
        input_height=64,
        input_width=64,
        patch=16,
        dim=32,
        depth=2,
        heads=2,
        teacher_dim=40,
        class_distill=True,
    )
    model = OneNStudent(cfg).eval()
    with torch.no_grad():
        out = model(_images(2, 64, 64))
    assert out.class_projected.shape == (2, 40) and model.class_projection.in_features == 64 + 24
    assert (
        OneNStudent(
            OneNConfig(num_classes=4, input_height=64, input_width=64, dim=32, depth=2, heads=2)
        ).class_projection
        is None
    )


STATE_FROM_MAIN = Path(__file__).parent / "data" / "student_state_main.npz"  # written by main's code at 26cabed


def _student_saved_by_main() -> tuple[OneNStudent, dict]:
    """The small student whose state_dict, two images and outputs the code before the faster forward saved."""
    saved = dict(np.load(STATE_FROM_MAIN))
    written = json.loads(str(saved["config"]))  # also holds the options removed since, at the values built today
    cfg = OneNConfig.from_dict({k: v for k, v in written.items() if k in OneNConfig.__dataclass_fields__})
    state = {key[len("state/") :]: torch.from_numpy(value) for key, value in saved.items() if key.startswith("state/")}
    model = OneNStudent(cfg).eval()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {k: tuple(v.shape) for k, v in state.items()}
    model.load_state_dict(state)
    return model, saved


def test_a_state_dict_saved_before_the_faster_forward_loads_and_computes_the_same():
    """Same keys and shapes, and the same outputs: runs in progress resume and export with this code."""
    model, saved = _student_saved_by_main()
    with torch.no_grad():
        out = model(torch.from_numpy(saved["image"]))
    np.testing.assert_allclose(out.score.numpy(), saved["score"], atol=1e-5)
    np.testing.assert_allclose(out.anomaly_map.numpy(), saved["anomaly_map"], atol=1e-5)
    np.testing.assert_allclose(out.class_logits.numpy(), saved["class_logits"], atol=1e-5)


def test_the_folded_input_normalisation_equals_normalising_first():
    """The Lite0 stem's first conv with the normalisation folded in (and its padding done on raw pixels) against
    the plain path: normalise, pad with zeros, convolve."""
    torch.manual_seed(0)
    model = OneNStudent(OneNConfig(num_classes=2, input_height=48, input_width=80, dim=32, depth=1, heads=2)).eval()
    assert isinstance(model.stem, Lite0Stem)
    torch.nn.init.normal_(model.stem.stem.conv.weight)
    image = _images(2, 48, 80)
    with torch.no_grad():
        folded = model.stem.forward_image(image, model.input)
        plain = model.stem(model.input(image))
    for a, b in zip(folded, plain, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_the_split_fine_head_equals_its_modules_run_in_turn():
    """FineMapHead's forward (split first conv, depthwise + channel-sum last conv) against nn.Sequential on the
    concatenated input, the network its state_dict describes."""
    torch.manual_seed(0)
    head = FineMapHead(24, 16).eval()
    for parameter in head.parameters():
        torch.nn.init.normal_(parameter, std=0.3)
    features, coarse = torch.randn(2, 24, 20, 12), torch.randn(2, 1, 5, 3)
    up = torch.nn.functional.interpolate(coarse, size=(20, 12), mode="bilinear", align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(
            head(features, coarse), up + head.net(torch.cat([features, up], dim=1)), atol=1e-5, rtol=1e-5
        )


@pytest.mark.slow
def test_the_exported_graph_of_a_state_dict_saved_before_computes_the_same(tmp_path):
    """The ONNX export of that student (the faster graph) against the outputs the old code computed in torch."""
    import onnxruntime as ort

    from onen.train.export import export_onnx

    model, saved = _student_saved_by_main()
    path = export_onnx(model, tmp_path / "model.onnx", model.cfg.input_height, model.cfg.input_width)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    score, anomaly_map, class_logits = session.run(None, {"image": saved["image"]})
    np.testing.assert_allclose(score, saved["score"], atol=1e-5)
    np.testing.assert_allclose(anomaly_map, saved["anomaly_map"], atol=1e-5)
    np.testing.assert_allclose(class_logits, saved["class_logits"], atol=1e-5)
