"""The OneN student: a small vision transformer whose attention maps are its anomaly maps.

One forward pass answers the bundle contract's three questions (score, anomaly map, class). Attention is computed
explicitly (matmul + softmax), so every layer's CLS->patch attention is at hand for the progressive focal loss and
the graph exports to plain ONNX ops every runtime has.

- Map: each layer's CLS->patch attention (its log-ratio to uniform attention, scaled and shifted per layer) is a map
  logit; a learned 1x1 combination of them plus a per-token head gives the coarse (token grid) logit, which a light
  conv head refines on the stem's stride-4 features (zero-initialised: training starts from the attention map) so a
  crack a few pixels wide is resolved below one token.
- Score: a head on the CLS token plus the refined map's peak logit, so a bright spot and the verdict agree.
- Class: the head reads the CLS token, the tokens pooled where the coarse map is bright and the stride-4 features
  pooled where the refined map is bright (which defect it is is written where it is).
- The exported map is sigmoid(map logit) * score ** MAP_GATE: a part the score calls good gets a dimmer map.
- Optional good-feature model (train.models.good_features), fitted after training, whose distances join score
  and map. Measurements behind these choices: docs/experiments.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from onen.train import runs
from onen.train.config import PATCHES, STEMS, TrainConfig
from onen.train.models.good_features import GoodFeatureModel
from onen.train.models.input_layer import ImageInput

MLP_RATIO = 2.0  # transformer MLP width / token width
STEM_CHANNELS = 16  # width of the first "conv" stem layer
FINE_CHANNELS = 16  # width of the fine map head
MAP_GATE = 0.25  # anomaly_map = sigmoid(map logit) * score ** MAP_GATE
GOOD_OWN_WEIGHT = 0.25  # with the good-feature model: weight of the student's own normalised score and map logit


@dataclass
class OneNConfig:
    """The student's shape: built from a run's settings (`from_train`), whose defaults are TrainConfig's."""

    num_classes: int  # class 0 == good; 1 means no classification head worth reading
    input_height: int
    input_width: int
    patch: int = TrainConfig.patch  # token stride in pixels (the stem downsamples by this factor)
    dim: int = TrainConfig.dim
    depth: int = TrainConfig.depth
    heads: int = TrainConfig.heads
    stem: str = TrainConfig.stem  # "lite0": ImageNet-pretrained EfficientNet-Lite0 layers; "conv": from scratch
    teacher_dim: int = 0  # >0: a projection of patch tokens to the teacher's feature width (distillation)
    class_distill: bool = False  # with teacher_dim: a training-only projection of the class head's input
    good_features: bool = False  # carry Gaussians of good parts' stem features and tokens (fitted after training)

    @classmethod
    def from_train(cls, cfg: TrainConfig, teacher_dim: int) -> OneNConfig:
        """The student a run trains (cfg with its class names and geometry resolved)."""
        return cls(
            num_classes=len(cfg.class_names),
            input_height=cfg.model_height,
            input_width=cfg.model_width,
            patch=cfg.patch,
            dim=cfg.dim,
            depth=cfg.depth,
            heads=cfg.heads,
            stem=cfg.stem,
            teacher_dim=teacher_dim,
            class_distill=cfg.weights.class_feature > 0 and teacher_dim > 0,
            good_features=cfg.uses_good_features(),
        )

    @property
    def grid(self) -> tuple[int, int]:
        return self.input_height // self.patch, self.input_width // self.patch

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "model_config") -> OneNConfig:
        """A checkpoint's model_config; unknown or missing keys are refused (no guessing of an older network)."""
        known = set(cls.__dataclass_fields__)
        runs.refuse_unknown(data, known, source)
        missing = sorted(known - set(data))
        if missing:
            raise runs.RunError(f"{source}: missing key(s) {', '.join(missing)}; train the run again with this version")
        return cls(**data)

    def check(self) -> None:
        if self.patch not in PATCHES:
            raise ValueError(f"patch must be one of {', '.join(map(str, PATCHES))}, got {self.patch}")
        if self.input_height % self.patch or self.input_width % self.patch:
            raise ValueError(f"input {self.input_height}x{self.input_width} must be a multiple of patch {self.patch}")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} must be a multiple of heads {self.heads}")
        if self.stem not in STEMS:
            raise ValueError(f"stem must be one of {', '.join(STEMS)}, got {self.stem!r}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")


@dataclass
class StudentOutput:
    score: torch.Tensor  # [N] 0..1
    anomaly_map: torch.Tensor  # [N,1,H,W] 0..1 (gated by the score, see MAP_GATE)
    class_logits: torch.Tensor  # [N,C]
    attention_maps: list[torch.Tensor]  # per layer [N,h,w], CLS->patch attention averaged over heads (sums to <= 1)
    layer_map_logits: list[torch.Tensor] = field(default_factory=list)  # per layer [N,h,w], logit of the 0..1 layer map
    map_logits: torch.Tensor | None = None  # [N,1,H,W] logit of the map before the score gate (what the losses train)
    score_logit: torch.Tensor | None = None  # [N] (both with the good-feature distances once those are fitted)
    tokens: torch.Tensor | None = None  # [N,h*w,dim] last patch tokens
    cls_token: torch.Tensor | None = None  # [N,dim]
    projected: torch.Tensor | None = None  # [N,teacher_dim,h,w] for feature distillation (when configured)
    class_projected: torch.Tensor | None = None  # [N,teacher_dim] the class head's input projected (when configured)
    stem_features: torch.Tensor | None = None  # [N,c,H/4,W/4] stride-4 stem features

    def layer_maps(self) -> list[torch.Tensor]:
        return [torch.sigmoid(m) for m in self.layer_map_logits]


class ConvStem(nn.Module):
    """Strided 3x3 convs down to the token stride: cheap local features before the transformer.

    forward -> (tokens [N,dim,h,w], stride-4 features [N,fine_channels_in,H/4,W/4])."""

    def __init__(self, cfg: OneNConfig):
        super().__init__()
        layers: list[nn.Module] = []
        channels, stride = 3, 1
        width = STEM_CHANNELS
        self.fine_channels_in, self.split = 0, 0
        while stride * 2 < cfg.patch:
            layers += [nn.Conv2d(channels, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            channels, stride = width, stride * 2
            if stride == 4:
                self.fine_channels_in, self.split = channels, len(layers)
            width = min(width * 2, cfg.dim)
        layers += [nn.Conv2d(channels, cfg.dim, 3, 2, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.net[: self.split](x)
        return self.net[self.split :](features), features


class Lite0Stem(nn.Module):
    """The first layers of EfficientNet-Lite0 (stem conv + 3 MBConv blocks, stride 4, 24 channels) with the
    teacher's ImageNet weights, then a patchify conv to the token grid.

    A transformer trained from scratch on a few hundred images learns low-level texture filters slowly; borrowing
    them from the pretrained CNN is cheap and leaves attention, maps and heads to the student.
    """

    LAYERS = 3  # MBConv blocks kept: output stride 4, 24 channels
    CHANNELS = 24

    def __init__(self, cfg: OneNConfig, pretrained: bool):
        super().__init__()
        from onen.train.models.efficientnet_lite import build_teacher

        lite0 = build_teacher(2, pretrained=pretrained)
        self.stem = lite0.stem
        self.blocks = lite0.blocks[: self.LAYERS]
        factor = cfg.patch // 4
        self.patchify = nn.Conv2d(self.CHANNELS, cfg.dim, factor, factor)
        self.fine_channels_in = self.CHANNELS

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.blocks(self.stem(x))  # [N, 24, H/4, W/4]
        return self.patchify(features), features

    def forward_image(self, image: torch.Tensor, normalisation: ImageInput) -> tuple[torch.Tensor, torch.Tensor]:
        """forward(normalisation(image)) with the normalisation folded into the first conv: (x - m) * s through a
        conv with weight w equals x through weight w * s and bias -sum(w * s * m), when the "SAME" padding pads x
        with m instead of the normalised input with 0. One elementwise pass less over the full-size image."""
        pixel_means = {m * normalisation.normalisation.scale for m in normalisation.normalisation.mean}
        if len(pixel_means) > 1:  # a per-channel mean: no one pad value
            return self.forward(normalisation(image))
        mean, inv_std = normalisation.mean, normalisation.inv_std
        first = self.stem.conv
        x = image.permute(0, 3, 1, 2).float()  # padded as float: TensorRT pads no uint8 tensors
        padding = first.same_padding(*x.shape[-2:])
        x = F.pad(x, padding, value=pixel_means.pop()) if any(padding) else x
        weight = first.weight * inv_std.view(1, 3, 1, 1)
        bias = -(weight * mean.view(1, 3, 1, 1)).sum(dim=(1, 2, 3))
        x = F.conv2d(x, weight, bias, first.stride)
        features = self.blocks(self.stem.act(self.stem.bn(x)))
        return self.patchify(features), features


class FineMapHead(nn.Module):
    """Refines the upsampled coarse (attention) map logit with stride-4 stem features: two 3x3 convs that
    see the features and the coarse logit, their output added to the coarse logit. The last conv starts at
    zero, so an untrained head leaves the attention map unchanged."""

    def __init__(self, in_channels: int, width: int = FINE_CHANNELS):
        super().__init__()
        last = nn.Conv2d(width, 1, 3, 1, 1)
        self.net = nn.Sequential(nn.Conv2d(in_channels + 1, width, 3, 1, 1), nn.ReLU(), last)
        nn.init.zeros_(last.weight)
        assert last.bias is not None  # built with a bias
        nn.init.zeros_(last.bias)

    def forward(self, features: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """up + net(cat([features, up])), with the first conv split by input channels into a conv of the features
        and one of up, summed: the same sum, but ONNX Runtime runs both in its blocked (NCHWc) conv kernels, which
        a conv over 24 + 1 channels does not get, and no concatenated copy of the features is made."""
        up = F.interpolate(coarse, size=features.shape[-2:], mode="bilinear", align_corners=False)
        first, activation, last = cast(nn.Conv2d, self.net[0]), self.net[1], cast(nn.Conv2d, self.net[2])
        channels = features.shape[1]
        hidden = F.conv2d(features, first.weight[:, :channels], first.bias, padding=1)
        hidden = activation(hidden + F.conv2d(up, first.weight[:, channels:], None, padding=1))
        # the last conv (width -> 1) as a depthwise 3x3 conv, then a 1x1 conv of ones summing the channels (with the
        # bias): ONNX Runtime's blocked kernels pad a single output channel to a block of 16, which costs a 3x3 conv
        # 16 times its work and a 1x1 conv little
        width = hidden.shape[1]
        per_channel = F.conv2d(hidden, last.weight.reshape(width, 1, 3, 3), None, padding=1, groups=width)
        ones = torch.ones(1, width, 1, 1, dtype=hidden.dtype, device=hidden.device)
        return up + F.conv2d(per_channel, ones, last.bias)


class Attention(nn.Module):
    """Multi-head self-attention on a token stream kept as [N*T, dim] rows: both projections are then one Gemm
    with its bias, and the heads are split with one transpose of the fused q/k/v projection (k's transpose is
    folded into the matmul by ONNX Runtime)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N*T, dim] -> ([N*T, dim], the CLS attention row of every head [N, heads, T])."""
        d = x.shape[1]
        qkv = self.qkv(x).reshape(n, -1, 3 * self.heads, self.head_dim).transpose(1, 2)  # [N, 3*heads, T, hd]
        q, k, v = qkv.split(self.heads, dim=1)
        logits = torch.matmul(q * self.scale, k.transpose(-2, -1))  # [N, heads, T, T]
        attention = torch.softmax(logits, dim=-1)
        out = torch.matmul(attention, v).transpose(1, 2).reshape(-1, d)
        return self.proj(out), attention[:, :, 0, :]


class Block(nn.Module):
    def __init__(self, cfg: OneNConfig):
        super().__init__()
        hidden = int(cfg.dim * MLP_RATIO)
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.attn = Attention(cfg.dim, cfg.heads)
        self.norm2 = nn.LayerNorm(cfg.dim)
        # the Identity sits where a dropout of rate 0 was: checkpoints name the second Linear mlp.3
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, hidden), nn.ReLU(), nn.Identity(), nn.Linear(hidden, cfg.dim))

    def forward(self, x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N*T, dim] -> (tokens [N*T, dim], the CLS attention row of every head [N, heads, T])."""
        y, cls_rows = self.attn(self.norm1(x), n)
        x = x + y
        x = x + self.mlp(self.norm2(x))
        return x, cls_rows


class OneNStudent(nn.Module):
    """uint8 NHWC image in -> StudentOutput (score, anomaly_map, class_logits, attention maps, tokens)."""

    family = "onen-student"

    def __init__(self, cfg: OneNConfig, pretrained: bool = False):
        """pretrained: load the ImageNet weights of the lite0 stem (training); False when a checkpoint follows."""
        super().__init__()
        cfg.check()
        self.cfg = cfg
        h, w = cfg.grid
        if cfg.stem == "lite0":
            from onen.train.models.efficientnet_lite import LITE_NORMALISATION

            self.input = ImageInput(LITE_NORMALISATION)  # the normalisation the pretrained layers expect
            self.stem: Lite0Stem | ConvStem = Lite0Stem(cfg, pretrained)
        else:
            self.input = ImageInput()
            self.stem = ConvStem(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + h * w, cfg.dim))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        # per-layer map calibration: logit = a_l * log(A_l * T) + b_l, a_l = softplus(raw)
        self.layer_scale_raw = nn.Parameter(torch.full((cfg.depth,), math.log(math.e - 1)))  # softplus -> 1
        self.layer_bias = nn.Parameter(torch.full((cfg.depth,), -2.0))
        self.combine = nn.Conv2d(cfg.depth, 1, 1)  # learned combination of per-layer map logits
        self.patch_head = nn.Sequential(nn.Linear(cfg.dim, cfg.dim // 2), nn.ReLU(), nn.Linear(cfg.dim // 2, 1))
        self.score_head = nn.Linear(cfg.dim, 1)
        self.score_from_map = nn.Parameter(torch.tensor(1.0))
        class_width = cfg.dim * 2 + self.stem.fine_channels_in  # CLS, map-pooled tokens, map-pooled stem features
        self.class_head = nn.Linear(class_width, cfg.num_classes)
        self.class_projection = (
            nn.Linear(class_width, cfg.teacher_dim) if cfg.class_distill and cfg.teacher_dim > 0 else None
        )
        self.fine_head = FineMapHead(self.stem.fine_channels_in)
        self.projection = nn.Linear(cfg.dim, cfg.teacher_dim) if cfg.teacher_dim > 0 else None
        self.good_features = None
        if cfg.good_features:
            fine_hw = (cfg.input_height // 4, cfg.input_width // 4)
            self.good_features = GoodFeatureModel(self.stem.fine_channels_in, fine_hw, cfg.dim, (h, w))
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.constant_(self.combine.weight, 1.0 / self.cfg.depth)
        assert self.combine.bias is not None  # built with a bias
        nn.init.constant_(self.combine.bias, 0.0)
        nn.init.constant_(self.score_head.bias, -1.0)

    def forward(self, image: torch.Tensor) -> StudentOutput:
        cfg = self.cfg
        h, w = cfg.grid
        n = image.shape[0]
        if isinstance(self.stem, Lite0Stem):
            x, fine_features = self.stem.forward_image(image, self.input)  # [N, dim, h, w], [N, c, H/4, W/4]
        else:
            x, fine_features = self.stem(self.input(image))
        x = x.flatten(2).transpose(1, 2)  # [N, h*w, dim]
        x = torch.cat([self.cls_token.expand(n, -1, -1), x], dim=1) + self.pos_embed
        x = x.reshape(-1, cfg.dim)  # [N*T, dim] through the blocks (Attention)
        cls_rows = []
        for block in self.blocks:
            x, cls_row = block(x, n)
            cls_rows.append(cls_row)
        x = x.reshape(n, -1, cfg.dim)
        # all layers' maps at once (a few ops over [N, depth, h, w] instead of a dozen tiny ones per layer)
        patch_attention = torch.stack(cls_rows, dim=1).mean(dim=2)[:, :, 1:].reshape(n, cfg.depth, h, w)
        scales = F.softplus(self.layer_scale_raw).view(1, -1, 1, 1)
        stacked_logits = scales * torch.log(patch_attention * float(h * w) + 1e-6) + self.layer_bias.view(1, -1, 1, 1)
        attention_maps, layer_logits = list(patch_attention.unbind(1)), list(stacked_logits.unbind(1))
        x = self.norm(x)
        cls, tokens = x[:, 0], x[:, 1:]
        patch_logit = self.patch_head(tokens).reshape(n, 1, h, w)
        coarse = self.combine(stacked_logits) + patch_logit  # [N, 1, h, w]
        refined = self.fine_head(fine_features, coarse)
        score_logit = self.score_head(cls).reshape(n) + self.score_from_map * refined.flatten(1).amax(dim=1)
        class_input = self._class_input(cls, tokens, coarse, refined, fine_features)
        map_source = refined
        if self.good_features is not None and self.good_features.is_fitted:
            score_logit, map_source = self._with_good_features(score_logit, refined, fine_features, tokens)
        map_logits = F.interpolate(
            map_source, size=(cfg.input_height, cfg.input_width), mode="bilinear", align_corners=False
        )
        projected = None
        if self.projection is not None:
            projected = self.projection(tokens).transpose(1, 2).reshape(n, -1, h, w)
        score = torch.sigmoid(score_logit)
        anomaly_map = torch.sigmoid(map_logits) * score.reshape(n, 1, 1, 1) ** MAP_GATE
        return StudentOutput(
            score=score,
            anomaly_map=anomaly_map,
            class_logits=self.class_head(class_input),
            attention_maps=attention_maps,
            layer_map_logits=layer_logits,
            map_logits=map_logits,
            score_logit=score_logit,
            tokens=tokens,
            cls_token=cls,
            projected=projected,
            class_projected=self.class_projection(class_input) if self.class_projection is not None else None,
            stem_features=fine_features,
        )

    def _with_good_features(
        self, score_logit: torch.Tensor, refined: torch.Tensor, fine_features: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Score logit and map logit (at the refined map's resolution, [N,1,H/4,W/4]) with the distances to the good
        parts' Gaussians added, all in units of the spread of good held-out images (train.models.good_features):
        score = the two distance peaks + GOOD_OWN_WEIGHT x the student's own score, map = the two distance maps + the
        same weight x the student's map logit, so the map's peak and the score still agree. Fused at the refined
        map's resolution, so the one upsampling to the input size stays the only full-resolution step."""
        good = self.good_features
        assert good is not None  # called only for a student with a good-feature model
        n, (h, w) = tokens.shape[0], self.cfg.grid
        stem_z, token_z = good.distances(fine_features, tokens.transpose(1, 2).reshape(n, -1, h, w))
        size = refined.shape[-2:]
        up = lambda z: z if z.shape[-2:] == size else F.interpolate(z, size=size, mode="bilinear", align_corners=False)  # noqa: E731
        own = GOOD_OWN_WEIGHT
        fused_map = own * good.normaliser(good.MAP, refined) + up(stem_z.unsqueeze(1)) + up(token_z.unsqueeze(1))
        fused_score = (
            own * good.normaliser(good.SCORE, score_logit)
            + stem_z.flatten(1).amax(dim=1)
            + token_z.flatten(1).amax(dim=1)
        )
        return fused_score, fused_map

    def _class_input(
        self, cls: torch.Tensor, tokens: torch.Tensor, coarse: torch.Tensor, refined: torch.Tensor, fine: torch.Tensor
    ) -> torch.Tensor:
        """What the class head reads: the CLS token, the tokens pooled where the coarse map is bright and the stride-4
        stem features pooled where the refined map is bright (each a softmax-weighted sum, one matmul)."""
        where = torch.softmax(coarse.flatten(1), dim=1).unsqueeze(1)  # [N, 1, h*w]
        fine_where = torch.softmax(refined.flatten(1), dim=1).unsqueeze(2)  # [N, H/4*W/4, 1]
        pooled_tokens = torch.matmul(where, tokens).squeeze(1)
        return torch.cat([cls, pooled_tokens, torch.matmul(fine.flatten(2), fine_where).squeeze(2)], dim=1)


class BundleOutputs(nn.Module):
    """Wraps any model returning StudentOutput-like objects into the bundle's (score, anomaly_map, class_logits)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model(image)
        if isinstance(out, tuple):
            return out
        return out.score, out.anomaly_map, out.class_logits


def build_student(cfg: OneNConfig, pretrained: bool = False) -> OneNStudent:
    return OneNStudent(cfg, pretrained)
