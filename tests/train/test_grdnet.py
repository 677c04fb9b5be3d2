"""GRD-Net networks, losses and training step: shapes (square and not), SSIM against a transcription of Wang et al.,
the focal loss's ROI modes, one real step on tiny parts with synthetic defects (every network learns, the U-Net's
loss never reaches the generator), a few dozen steps that lower the reconstruction loss, and the bundle export
(ONNX Runtime parity, every op in TensorRT's ONNX parser)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from onen.train.data.synthetic import SyntheticDefects
from onen.train.export import ExportInfo, export_model, onnx_outputs, torch_outputs
from onen.train.grdnet_step import (
    GRDNetNets,
    GRDNetOptimisers,
    OptimiserConfig,
    discriminator_won,
    generator_step,
    grdnet_step,
    unet_step,
)
from onen.train.losses_grdnet import GRDNetWeights, contextual_loss, roi_focal_loss
from onen.train.models.grdnet_export import GRDNetExport, score_pool_kernel
from onen.train.models.grdnet_generator import GRDNetConfig, unit_images
from onen.train.models.unet import UNetConfig
from onen.train.ssim import gaussian_window, ssim
from onen.train.tiny_data import make_tiny_set

REPO = Path(__file__).resolve().parents[2]

# Operators marked supported in onnx-tensorrt's docs/operators.md for TensorRT 8.5 and still in its TensorRT 10
# table (JetPack 6 ships TensorRT 10.3): the parser reads every one of them.
TENSORRT_ONNX_OPS = frozenset(
    """Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil Celu Clip
    Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div Dropout Einsum
    Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool
    GlobalMaxPool Greater GreaterOrEqual GridSample GRU HardSigmoid HardSwish Identity If ImageScaler
    InstanceNormalization IsNaN LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul
    Max MaxPool Mean MeanVarianceNormalization Min Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
    ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range
    Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
    ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements
    ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt
    Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor""".split()
)


def _small_config(height: int = 64, width: int = 64) -> GRDNetConfig:
    return GRDNetConfig(input_height=height, input_width=width, base_width=8, unet=UNetConfig(base_width=8))


def _tiny_batch(seed: int, count: int = 4, size: int = 64) -> dict[str, torch.Tensor]:
    """Good tiny parts with a Perlin defect inside the AOI and, on every other image, a mark outside it."""
    parts = make_tiny_set(seed=seed, count=count * 2, size=size, defect_fraction=0.5)
    good = parts.images[parts.labels == 0][:count]
    rng = np.random.default_rng(seed)
    inside, outside = SyntheticDefects(seed=seed), SyntheticDefects(seed=seed + 1)
    images, masks = [], []
    for index, clean in enumerate(good):
        image, mask = inside.make(clean, parts.aoi, rng)
        if index % 2:
            image, outside_mask = outside.make(image, ~parts.aoi, rng)
            mask = mask | outside_mask
        images.append(image)
        masks.append(mask)
    aoi = np.repeat(parts.aoi[None], len(good), axis=0)
    return {
        "image": torch.from_numpy(np.stack(images)),
        "target": torch.from_numpy(np.ascontiguousarray(good)),
        "mask": torch.from_numpy(np.stack(masks).astype(np.float32)),
        "aoi": torch.from_numpy(aoi.astype(np.float32)),
    }


@pytest.mark.parametrize("size", [(128, 128), (128, 64)])
def test_shapes_at_the_paper_size_and_on_a_non_square_input(size):
    torch.manual_seed(0)
    height, width = size
    cfg = GRDNetConfig(input_height=height, input_width=width)
    nets = GRDNetNets.build(cfg)
    x = torch.rand(2, 3, height, width)
    with torch.no_grad():
        x_hat, z, z_hat = nets.generator(x)
    assert x_hat.shape == x.shape and float(x_hat.min()) >= 0 and float(x_hat.max()) <= 1
    assert z.shape == z_hat.shape == (2, 32, height // 16, width // 16)  # 32x8x8 at 128 px
    with torch.no_grad():
        logits, features = nets.discriminator(x)
        segmentation = nets.unet(torch.cat([x, x_hat], dim=1))
        score, anomaly_map, class_logits = GRDNetExport(nets.generator, nets.unet, 2).eval()(
            torch.randint(0, 256, (2, height, width, 3), dtype=torch.uint8)
        )
    assert logits.shape == (2, 1, height // 16, width // 16) and features.shape == (2, 128, height // 16, width // 16)
    assert segmentation.shape == (2, 1, height, width)
    assert score.shape == (2,) and anomaly_map.shape == (2, 1, height, width) and class_logits.shape == (2, 2)


def test_an_input_that_is_not_a_multiple_of_16_is_refused_and_a_config_survives_its_dict():
    with pytest.raises(ValueError, match="multiple of 16"):
        GRDNetConfig(input_height=100, input_width=64).check()
    cfg = _small_config(64, 48)
    assert GRDNetConfig(**cfg.to_dict()) == cfg


def test_score_pool_kernel_scales_the_papers_21_px_at_256_and_stays_odd():
    assert score_pool_kernel(256, 256) == 21
    assert score_pool_kernel(128, 128) == 11
    assert score_pool_kernel(512, 512) == 43
    assert score_pool_kernel(128, 64) % 2 == 1 and score_pool_kernel(16, 16) == 1


def _ssim_transcribed(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. 2004 (eq. 13 and their ssim_index.m) window by window: Gaussian 11x11, sigma 1.5, K1 0.01, K2 0.03,
    L = 1, weighted means, variances and covariance over each valid window; mean over windows (and channels)."""
    coords = np.arange(11) - 5.0
    g = np.exp(-(coords**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 1) ** 2, (0.03 * 1) ** 2
    values = []
    for channel in range(x.shape[0]):
        for i in range(x.shape[1] - 10):
            for j in range(x.shape[2] - 10):
                a, b = x[channel, i : i + 11, j : j + 11], y[channel, i : i + 11, j : j + 11]
                mu_a, mu_b = (w * a).sum(), (w * b).sum()
                var_a, var_b = (w * (a - mu_a) ** 2).sum(), (w * (b - mu_b) ** 2).sum()
                cov = (w * (a - mu_a) * (b - mu_b)).sum()
                values.append(
                    ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
                )
    return float(np.mean(values))


def test_ssim_matches_a_direct_transcription_of_wang_et_al():
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 24, 21))
    y = np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1)  # a noisy copy: SSIM well between 0 and 1
    got = ssim(torch.from_numpy(x).float(), torch.from_numpy(y).float()).numpy()
    expected = [_ssim_transcribed(x[i], y[i]) for i in range(2)]
    assert 0.05 < expected[0] < 0.95
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert gaussian_window().sum().item() == pytest.approx(1.0)


def test_ssim_is_nan_free_on_flat_images_and_their_gradients():
    flat = torch.full((1, 3, 16, 16), 0.5, requires_grad=True)
    other = torch.zeros(1, 3, 16, 16)
    assert ssim(flat, flat.detach()).item() == pytest.approx(1.0)
    value = ssim(flat, other)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(flat.grad).all()
    assert ssim(other, other).item() == pytest.approx(1.0)


def _mark_outside_the_roi() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Map logits at 0 (p = 0.5), a synthetic mark on the left half, the ROI the right half only."""
    mask = torch.zeros(1, 8, 8)
    mask[:, 2:5, 1:3] = 1  # outside the ROI
    mask[:, 2:5, 5:7] = 1  # inside it
    roi = torch.zeros(1, 8, 8)
    roi[:, :, 4:] = 1
    return torch.zeros(1, 1, 8, 8, requires_grad=True), mask, roi


def test_target_masked_focal_loss_pushes_a_mark_outside_the_roi_to_zero():
    logits, mask, roi = _mark_outside_the_roi()
    optimiser = torch.optim.SGD([logits], lr=50.0)
    for _ in range(30):
        optimiser.zero_grad()
        roi_focal_loss(logits, mask, roi, "target").backward()
        optimiser.step()
    probability = torch.sigmoid(logits.detach())[0, 0]
    assert probability[2:5, 1:3].max() < 0.2  # the mark outside the ROI: not a defect
    assert probability[2:5, 5:7].min() > 0.8  # the mark inside: a defect
    without_roi, mask, roi = _mark_outside_the_roi()
    roi_focal_loss(without_roi, mask, roi, "none").backward()
    assert (without_roi.grad[0, 0, 2:5, 1:3] < 0).all()  # without the ROI term the outside mark is pushed up


def test_prediction_masked_focal_loss_gives_no_gradient_outside_the_roi():
    logits, mask, roi = _mark_outside_the_roi()
    loss = roi_focal_loss(logits, mask, roi, "prediction")
    loss.backward()
    assert torch.isfinite(loss)
    assert (logits.grad[0, 0][roi[0] == 0] == 0).all()
    assert (logits.grad[0, 0][roi[0] == 1] != 0).all()
    with pytest.raises(ValueError, match="roi_mode"):
        roi_focal_loss(logits, mask, roi, "inside")


def _snapshot(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def _changed(before: list[torch.Tensor], net: torch.nn.Module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


def test_one_step_on_tiny_parts_updates_every_network_and_logs_the_discriminator():
    torch.manual_seed(0)
    nets = GRDNetNets.build(_small_config())
    optimisers = GRDNetOptimisers.build(nets)
    batch = _tiny_batch(seed=1)
    assert batch["mask"][batch["aoi"] == 0].sum() > 0  # the batch has marks outside the AOI
    before = {name: _snapshot(getattr(nets, name)) for name in ("generator", "discriminator", "unet")}
    logs = grdnet_step(nets, optimisers, batch, GRDNetWeights())
    for name, snapshot in before.items():
        assert _changed(snapshot, getattr(nets, name)), name
    assert all(np.isfinite(value) for value in logs.values())
    assert 0 < logs["d_real"] < 1 and 0 < logs["d_fake"] < 1 and logs["d_loss"] > 0
    assert logs["g_total"] == pytest.approx(
        logs["g_adversarial"] + 50 * (logs["g_l1"] + logs["g_ssim"]) + logs["g_encoder"], rel=1e-5
    )
    assert nets.discriminator.training and all(p.requires_grad for p in nets.discriminator.parameters())
    with pytest.raises(KeyError, match="target"):
        grdnet_step(nets, optimisers, {k: v for k, v in batch.items() if k != "target"})


def test_the_unet_loss_never_reaches_the_generator_and_the_generator_step_never_trains_the_discriminator():
    torch.manual_seed(0)
    nets = GRDNetNets.build(_small_config())
    optimisers = GRDNetOptimisers.build(nets)
    batch = _tiny_batch(seed=2)
    image, target = unit_images(batch["image"]), unit_images(batch["target"])
    outputs = nets.generator(image)  # with its graph, as in grdnet_step
    unet_step(nets, optimisers, image, outputs[0], batch["mask"], batch["aoi"], GRDNetWeights())
    assert all(p.grad is None for p in nets.generator.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in nets.unet.parameters())
    discriminator_before = _snapshot(nets.discriminator)
    generator_step(nets, optimisers, target, nets.generator(image), GRDNetWeights())
    assert all(p.grad is None for p in nets.discriminator.parameters())
    assert not _changed(discriminator_before, nets.discriminator)


def test_a_few_dozen_steps_lower_the_reconstruction_loss_on_held_out_parts():
    torch.manual_seed(0)
    nets = GRDNetNets.build(_small_config())
    optimisers = GRDNetOptimisers.build(nets, OptimiserConfig(lr=1e-3))
    held_out = _tiny_batch(seed=100, count=4)
    weights = GRDNetWeights()

    def reconstruction_loss() -> float:
        nets.generator.eval()
        with torch.no_grad():
            x_hat = nets.generator.reconstruct(unit_images(held_out["image"]))
            return float(contextual_loss(unit_images(held_out["target"]), x_hat, weights)["contextual"])

    start = reconstruction_loss()
    for step in range(36):
        grdnet_step(nets, optimisers, _tiny_batch(seed=step % 6, count=4), weights)
    end = reconstruction_loss()
    assert end < 0.8 * start, (start, end)


def test_discriminator_won_needs_both_outputs_at_the_edges():
    assert discriminator_won(0.99, 0.01)
    assert not discriminator_won(0.99, 0.2) and not discriminator_won(0.7, 0.01)


def _graph_ops(proto: onnx.ModelProto) -> set[str]:
    ops = {node.op_type for node in proto.graph.node}
    for function in proto.functions:
        ops |= {node.op_type for node in function.node}
    return ops - {function.name for function in proto.functions}


GRDNET_ONNX_OPS = {
    "Add",
    "AveragePool",
    "Cast",
    "Clip",
    "Concat",
    "Conv",
    "Expand",
    "LeakyRelu",
    "Log",
    "MaxPool",
    "Mul",
    "ReduceMax",
    "Relu",
    "Resize",
    "Sigmoid",
    "Sub",
    "Transpose",
    "Unsqueeze",
}


@pytest.mark.slow  # a dynamo export takes 4-12 s here
def test_export_matches_torch_in_onnx_runtime_and_uses_only_tensorrt_ops(tmp_path):
    torch.manual_seed(3)
    cfg = _small_config(64, 48)
    nets = GRDNetNets.build(cfg)
    batch = _tiny_batch(seed=4)
    grdnet_step(nets, GRDNetOptimisers.build(nets), {key: value[:, :, :48] for key, value in batch.items()})  # 64x48
    model = GRDNetExport(nets.generator, nets.unet, num_classes=2).eval()
    rng = np.random.default_rng(0)
    info = ExportInfo(name="g", class_names=["good", "defect"], input_height=64, input_width=48, family="grdnet")
    bundle = export_model(model, info, tmp_path / "bundle", rng.integers(0, 256, (2, 64, 48, 3), dtype=np.uint8))

    images = rng.integers(0, 256, (3, 64, 48, 3), dtype=np.uint8)
    expected, got = torch_outputs(model, images), onnx_outputs(bundle / "model.onnx", images)
    for want, have in zip(expected, got, strict=True):
        assert have.shape == want.shape and np.abs(have - want).max() <= 1e-4
    probabilities = torch.softmax(torch.from_numpy(got[2]), dim=1).numpy()
    np.testing.assert_allclose(probabilities[:, 1], got[0], atol=1e-5)  # p(defect) is the score

    proto = onnx.load(str(bundle / "model.onnx"))
    ops = _graph_ops(proto)
    assert ops == GRDNET_ONNX_OPS
    assert ops <= TENSORRT_ONNX_OPS, ops - TENSORRT_ONNX_OPS
    jetson = (REPO / "docs" / "jetson.md").read_text()
    assert all(f"`{op}`" in jetson for op in ops)  # the list in docs/jetson.md is the graph's
