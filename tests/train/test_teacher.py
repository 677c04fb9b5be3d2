"""The EfficientNet-Lite0 teacher: strict ImageNet load, shapes, Grad-CAM through the graph, export outputs."""

from __future__ import annotations

import cv2
import matplotlib.cbook
import pytest
import torch

from onen.train.gradcam import grad_cam
from onen.train.losses_ceod import ceod_loss
from onen.train.models.efficientnet_lite import (
    EfficientNetLite,
    EfficientNetLiteConfig,
    TeacherExport,
    build_teacher,
    imagenet_weights_path,
    load_imagenet_weights,
)

MILITARY_UNIFORM = 652  # ImageNet class of the classic Grace Hopper portrait


@pytest.fixture(scope="module")
def teacher() -> EfficientNetLite:
    torch.manual_seed(0)
    return build_teacher(num_classes=4).eval()


def _images(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=g)


def test_imagenet_weights_classify_a_real_photo():
    """With its ImageNet head kept, the loaded network recognises the portrait shipped with matplotlib."""
    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    side = min(h, w)
    rgb = rgb[(h - side) // 2 : (h + side) // 2, (w - side) // 2 : (w + side) // 2]
    image = torch.from_numpy(cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_AREA))[None]
    model = EfficientNetLite(EfficientNetLiteConfig(num_classes=1000))
    load_imagenet_weights(model)
    with torch.no_grad():
        probabilities = model.eval()(image).softmax(dim=1)[0]
    assert probabilities.argmax().item() == MILITARY_UNIFORM
    assert probabilities[MILITARY_UNIFORM] > 0.3


def test_strict_load_maps_every_tensor_and_replaces_only_the_classifier(teacher):
    source = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    ours = teacher.state_dict()
    assert len(ours) == len(source)  # one to one, classifier included
    assert torch.equal(ours["blocks.15.project.conv.weight"], source["_blocks.15._project_conv.weight"])
    assert torch.equal(ours["head.bn.running_var"], source["_bn1.running_var"])
    assert teacher.classifier.weight.shape == (4, 1280)
    for name, tensor in ours.items():  # sane BN statistics everywhere
        if name.endswith("running_var"):
            # The TF checkpoint has a few dead channels (ReLU6 always 0 upstream -> variance exactly 0).
            assert torch.isfinite(tensor).all() and torch.all(tensor >= 0), name
            assert (tensor == 0).float().mean() < 0.15, name
        if name.endswith("running_mean"):
            assert torch.isfinite(tensor).all() and tensor.abs().max() < 1e3, name


def test_strict_load_refuses_a_state_dict_that_does_not_fit(tmp_path):
    source = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    source["_blocks.3._bn1.weight"] = torch.ones(7)
    source["_extra.weight"] = torch.ones(1)
    path = tmp_path / "bad.pth"
    torch.save(source, path)
    with pytest.raises(RuntimeError) as info:
        load_imagenet_weights(EfficientNetLite(EfficientNetLiteConfig(num_classes=3)), str(path))
    assert "blocks.3.depthwise.bn.weight" in str(info.value) and "_extra.weight" in str(info.value)


def test_shapes_and_non_degenerate_features(teacher):
    with torch.no_grad():
        features, logits = teacher.forward_features(_images(3, 64))
    assert features.shape == (3, 1280, 2, 2)
    assert logits.shape == (3, 4)
    assert torch.isfinite(features).all()
    assert features.std() > 0.05 and (features > 0).float().mean() > 0.01


def test_grad_cam_is_differentiable_down_to_the_weights(teacher):
    model = build_teacher(num_classes=3).train()
    features, logits = model.forward_features(_images(2, 64, seed=1))
    cam = grad_cam(features, logits, torch.tensor([1, 2]))
    assert cam.shape == (2, 2, 2)
    assert cam.min() >= 0 and cam.max() <= 1
    # Only the OD term, through the CAM, reaches the loss here (cross-entropy is detached away).
    mask = torch.zeros(2, 64, 64)
    mask[:, :16, :16] = 1
    od_only = ceod_loss(logits.detach(), torch.tensor([1, 2]), cam, mask, torch.tensor([True, True]), omega=1.0)
    od_only.backward()
    assert model.classifier.weight.grad.abs().sum() > 0
    assert model.blocks[10].depthwise.conv.weight.grad.abs().sum() > 0


def test_grad_cam_needs_features_in_the_graph(teacher):
    with torch.no_grad():
        features, logits = teacher.forward_features(_images(1, 64))
    with pytest.raises(ValueError, match="requires_grad"):
        grad_cam(features, logits, torch.tensor([1]))


def test_teacher_export_outputs_in_range(teacher):
    export = TeacherExport(teacher).eval()
    with torch.no_grad():
        score, anomaly_map, class_logits = export(_images(2, 96, seed=2))
    assert score.shape == (2,) and anomaly_map.shape == (2, 1, 96, 96) and class_logits.shape == (2, 4)
    assert torch.all((score >= 0) & (score <= 1))
    assert anomaly_map.min() >= 0 and anomaly_map.max() <= 1
    # The map is the CAM (peak 1) scaled by the score; bilinear upsampling may shave the peak a little.
    peak = anomaly_map.amax(dim=(1, 2, 3))
    assert torch.all(peak <= score + 1e-6) and torch.all(peak >= 0.8 * score)
    assert torch.allclose(score, 1 - class_logits.softmax(dim=1)[:, 0], atol=1e-6)


def test_imagenet_features_are_frozen_stride_16_and_stay_in_eval_mode():
    from onen.train.models.efficientnet_lite import ImageNetFeatures

    net = ImageNetFeatures().train()
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    out = net(torch.randint(0, 256, (2, 64, 96, 3), dtype=torch.uint8))
    assert out.shape == (2, ImageNetFeatures.channels, 4, 6)
    reference = build_teacher(2, pretrained=True).eval()
    with torch.no_grad():
        expected = reference.blocks[: ImageNetFeatures.BLOCKS](
            reference.stem(reference.input(torch.zeros(1, 64, 64, 3, dtype=torch.uint8)))
        )
        assert torch.equal(
            net(torch.zeros(1, 64, 64, 3, dtype=torch.uint8)), expected
        )  # the ImageNet weights, untouched
