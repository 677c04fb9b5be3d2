"""The student's model of good parts: per-position Gaussians, their normalisation, and how they join the outputs."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from onen.edge.errors import OnenError
from onen.train.export import ExportInfo, export_model, torch_outputs
from onen.train.good_feature_fit import fit_good_features
from onen.train.metrics import image_auroc
from onen.train.models.good_features import Normaliser, PositionGaussian
from onen.train.models.onen_vit import OneNConfig, OneNStudent
from onen.train.tiny_data import make_tiny_set


def test_distance_is_the_mahalanobis_distance_at_each_position():
    rng = np.random.default_rng(0)
    # two positions with different means and correlated channels
    mixing = np.array([[2.0, 0.0, 0.0], [1.5, 0.5, 0.0], [0.0, 0.0, 0.3]])
    samples = rng.normal(size=(4000, 2, 3)) @ mixing.T + np.array([[0, 0, 0], [5, -5, 1]])
    features = torch.from_numpy(samples.transpose(0, 2, 1).reshape(4000, 3, 1, 2)).float()
    gaussian = PositionGaussian(3, 1, 2)
    gaussian.fit(features)
    probe = torch.tensor([[[[1.0, 5.0]], [[0.5, -4.0]], [[-0.2, 1.3]]]])  # [1, C=3, 1, 2]
    got = gaussian.distance(probe)[0, 0].numpy()
    for position in range(2):
        x = samples[:, position]
        mean, covariance = x.mean(axis=0), np.cov(x, rowvar=False)
        covariance += 0.01 * np.diag(covariance).mean() * np.eye(3)  # the ridge of PositionGaussian
        delta = probe[0, :, 0, position].numpy() - mean
        assert got[position] == pytest.approx(float(np.sqrt(delta @ np.linalg.inv(covariance) @ delta)), rel=1e-3)
    at_mean = gaussian.distance(gaussian.mean.reshape(2, 3).T.reshape(1, 3, 1, 2))
    assert float(at_mean.max()) < 1e-3


def test_fit_refuses_too_few_or_misshaped_features():
    gaussian = PositionGaussian(3, 2, 2)
    with pytest.raises(ValueError, match="shape"):
        gaussian.fit(torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match="shape"):
        gaussian.fit(torch.zeros(5, 4, 2, 2))


def test_normaliser_puts_the_median_at_zero_and_the_interquartile_range_at_one():
    normaliser = Normaliser(2)
    normaliser.fit(1, torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert float(normaliser(1, torch.tensor(3.0))) == pytest.approx(0.0)
    assert float(normaliser(1, torch.tensor(5.0))) == pytest.approx(1.0)
    normaliser.fit(0, torch.tensor([2.0, 2.0, 2.0]))  # no spread: still a finite scale
    assert torch.isfinite(normaliser(0, torch.tensor(3.0)))


def _good_items(images: np.ndarray) -> list[dict]:
    return [{"image": torch.from_numpy(image)} for image in images]


def _student(seed: int = 0, good_features: bool = True) -> OneNStudent:
    torch.manual_seed(seed)
    cfg = OneNConfig(
        num_classes=3,
        input_height=64,
        input_width=64,
        patch=16,
        dim=32,
        depth=2,
        heads=2,
        stem="conv",
        good_features=good_features,
    )
    return OneNStudent(cfg).eval()


@pytest.fixture(scope="module")
def fitted():
    data = make_tiny_set(seed=11, count=160, size=64)
    good = data.images[data.labels == 0]
    model = _student()
    summary = fit_good_features(
        model, _good_items(good[:60]), _good_items(good[60:]), batch_size=16, device=torch.device("cpu")
    )
    return model, data, summary


def test_an_unfitted_model_leaves_the_student_as_it_is():
    images = make_tiny_set(seed=2, count=4, size=64).images
    plain, carrying = _student(good_features=False), _student(good_features=True)
    carrying.load_state_dict(plain.state_dict(), strict=False)
    for ours, theirs in zip(torch_outputs(carrying, images), torch_outputs(plain, images), strict=True):
        assert np.array_equal(ours, theirs)


def test_fitted_distances_tell_defects_from_good_parts_even_untrained(fitted):
    """A student that never saw a defect (random weights): the Gaussians alone rank defects above good parts."""
    model, data, summary = fitted
    assert summary["train_images"] == 60 and not summary["held_out_is_train"]
    test = make_tiny_set(seed=12, count=80, size=64)
    score, anomaly_map, _ = torch_outputs(model, test.images)
    assert image_auroc(test.labels, score) > 0.8
    peak_inside = [
        float(m[0][mask].max())
        for m, mask, label in zip(anomaly_map, test.masks, test.labels, strict=True)
        if label == 1
    ]
    median_elsewhere = [
        float(np.median(m[0][~mask]))
        for m, mask, label in zip(anomaly_map, test.masks, test.labels, strict=True)
        if label == 1
    ]
    assert np.median(peak_inside) > np.median(median_elsewhere)  # the map is bright where the defect is


def test_checkpoint_round_trip_keeps_the_fitted_model(fitted, tmp_path):
    model = fitted[0]
    path = tmp_path / "student.pt"
    torch.save({"model": model.state_dict(), "model_config": model.cfg.to_dict()}, path)
    state = torch.load(path, weights_only=False)
    again = OneNStudent(OneNConfig.from_dict(state["model_config"]))
    assert not again.good_features.is_fitted
    again.load_state_dict(state["model"])
    assert again.good_features.is_fitted
    images = fitted[1].images[:3]
    for ours, theirs in zip(torch_outputs(again, images), torch_outputs(model, images), strict=True):
        assert np.array_equal(ours, theirs)


@pytest.mark.slow  # a dynamo export takes 4-12 s here
def test_fitted_student_exports_with_parity(fitted, tmp_path):
    model, data, _ = fitted
    info = ExportInfo(name="t", class_names=list(data.class_names), input_height=64, input_width=64)
    bundle = export_model(model, info, tmp_path / "bundle", data.images[:2])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(bundle / "model.onnx"), options, providers=["CPUExecutionProvider"])
    images = data.images[2:7]
    for ours, theirs in zip(session.run(None, {"image": images}), torch_outputs(model, images), strict=True):
        assert ours.shape == theirs.shape and np.abs(ours - theirs).max() <= 1e-4


def test_fitting_needs_the_option_and_good_images():
    with pytest.raises(OnenError, match="no good-feature model"):
        fit_good_features(_student(good_features=False), [], [], 4, torch.device("cpu"))
    with pytest.raises(OnenError, match="at least 2 good"):
        fit_good_features(_student(), _good_items(np.zeros((1, 64, 64, 3), np.uint8)), [], 4, torch.device("cpu"))


def test_pooled_and_projected_gaussians_measure_in_the_reduced_space():
    torch.manual_seed(0)
    features = torch.randn(300, 6, 4, 4) * torch.tensor([3.0, 2.0, 1.0, 0.1, 0.1, 0.1])[None, :, None, None]
    reduced = PositionGaussian(6, 4, 4, pool=2, components=3)
    reduced.fit(features)
    assert reduced.mean.shape == (4, 1, 3) and reduced.precision.shape == (4, 3, 3)
    probe = torch.randn(2, 6, 4, 4)
    # the same as a full Gaussian fitted on the pooled, projected features
    project = lambda f: torch.einsum("kc,nchw->nkhw", reduced.basis, torch.nn.functional.avg_pool2d(f, 2))  # noqa: E731
    plain = PositionGaussian(3, 2, 2)
    plain.fit(project(features))
    assert torch.allclose(reduced.distance(probe), plain.distance(project(probe)), rtol=1e-3, atol=1e-3)
    # the leading components are the high-variance channels
    assert set(reduced.basis.abs().argmax(dim=1).tolist()) == {0, 1, 2}
    with pytest.raises(ValueError, match="pooled"):
        PositionGaussian(6, 5, 4, pool=2)
