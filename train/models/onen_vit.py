"""The OneN student: a small vision transformer whose attention maps are its anomaly maps.

One forward pass answers the three questions of the bundle contract (score, anomaly map, class).
Attention is computed explicitly (matmul + softmax) so the CLS->patch attention of every layer can be
returned for the progressive focal loss and so the graph exports to plain ONNX ops that every runtime has.

How the maps are made (our reading of the OneN abstract):
- Each block's CLS->patch attention, averaged over heads, is a distribution over patches (plus the CLS
  token itself, which absorbs the attention on a good part). Its log-ratio to the uniform attention,
  scaled and shifted by two learned scalars per layer, gives the layer's map logit; sigmoid -> 0..1.
- The coarse map logit is a learned 1x1 combination of the per-layer map logits plus a light per-patch
  head on the last tokens (one value per token, e.g. 8x8 at 128 px with 16 px tokens).
- fine_map: a thin crack is a few pixels wide, far below one token. The stem already computes stride-4
  features (the Lite0 stem: 24 channels, 32x32 at 128 px); a light conv head reads them together with the
  upsampled coarse logit and adds a correction: fine logit = up(coarse) + head([stem features, up(coarse)]).
  The map stays built from the attention maps (the coarse logit is its base, and the head is zero-initialised,
  so training starts from the pure attention map); the head sharpens its edges. All terms are absolute logits
  (no per-image normalisation), so map values compare across images. Then bilinear to the input size, sigmoid.
- The score combines a head on the CLS token with the maximum of the map logit (score_map: the refined map
  by default, the token-grid map for runs from before the fine head), so a bright spot on the map and the
  verdict cannot disagree much.
- class_pool "cls+map": the class head reads the CLS token and the patch tokens pooled with the softmax of the
  coarse map logit (the tokens where the defect is): which defect it is is written where it is.
  "cls+map+fine" (the trainer's default) adds the stride-4 stem features pooled with the softmax of the refined
  map: a blowhole, a crack and a chipped edge differ at a scale below one token. Magnetic tile validation
  defect-class accuracy 0.846 -> 0.872 (one image of 39; every other change tried stayed at 0.846).
- class_distill (training only): the class head's input is also projected onto the teacher's globally pooled
  features and pulled towards them (cosine). The student's class head alone overfits (magnetic tile: defect-class
  accuracy 0.98 on its training images, 0.87 on held-out ones, where the teacher keeps 0.97); reading what the
  teacher's classifier reads raised validation image AUROC 0.973 -> 0.988 and pixel AUROC 0.923 -> 0.955.
- map_gate: the output map is sigmoid(map logit) * score ** map_gate. The map alone is trained per pixel and
  lights up texture on many good parts (median peak 0.74-0.87 on good validation images); the score has seen
  the whole part. Gating dims the map of a part the score calls good, as the teacher's CAM x score does, so
  good parts give fewer regions and map values compare across images. The training losses read the ungated
  map logit. Chosen on the magnetic tile validation split: exponent 0.25 raised pixel AUROC in all four runs
  tried (full 0.933 -> 0.939, 0.923 -> 0.942; weak 0.732 -> 0.877, 0.691 -> 0.839); 1.0 lowered one full run.
- good_features (train.models.good_features): Gaussians of good parts' stem features and tokens at every position,
  fitted after training; once fitted, their normalised distances join the score and the map (supervision none:
  magnetic tile validation image AUROC 0.835 -> 0.935 with ImageNet-feature distillation). Unfitted (during
  training) they are skipped.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from onen.train.models.good_features import GoodFeatureModel
from onen.train.models.input_layer import ImageInput

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}
CLASS_POOLS = ("cls", "cls+map", "cls+map+fine")


@dataclass
class OneNConfig:
    num_classes: int = 1  # class 0 == good; 1 means no classification head worth reading
    input_height: int = 128
    input_width: int = 128
    patch: int = 16  # token stride in pixels (the stem downsamples by this factor)
    dim: int = 96
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 2.0
    stem: str = "lite0"  # "lite0": ImageNet-pretrained EfficientNet-Lite0 stem + first 3 blocks (stride 4);
    # "conv": strided 3x3 convs from scratch
    stem_channels: int = 16  # width of the first "conv" stem layer
    activation: str = "relu"  # "relu" (fastest in ONNX Runtime/TensorRT) or "gelu"
    teacher_dim: int = 0  # >0: a projection of patch tokens to the teacher's feature width (distillation)
    class_distill: bool = (
        False  # with teacher_dim: a training-only projection of the class head's input to the teacher's
    )
    # pooled features (distillation of what the teacher's classifier reads; not exported)
    dropout: float = 0.0
    fine_map: bool = True  # refine the map on the stem's stride-4 features (no-op for patch 4: tokens are stride 4)
    fine_channels: int = 16  # width of the fine map head
    class_pool: str = "cls"  # "cls": class head reads the CLS token; "cls+map": also map-pooled patch tokens;
    # "cls+map+fine": also map-pooled stride-4 stem features
    score_map: str = "fine"  # the map whose maximum logit joins the score: "coarse" (token grid) or "fine" (refined)
    map_gate: float = 0.25  # anomaly_map = sigmoid(map logit) * score ** map_gate (0: the map alone)
    good_features: bool = False  # carry Gaussians of good parts' stem features and tokens (fitted after training)
    good_own_weight: float = 0.25  # with good_features: weight of the student's own (normalised) score and map logit

    @property
    def grid(self) -> tuple[int, int]:
        return self.input_height // self.patch, self.input_width // self.patch

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> OneNConfig:
        data = {
            "fine_map": False,
            "class_pool": "cls",
            "score_map": "coarse",
            "map_gate": 0.0,
            **data,
        }  # checkpoints from before these options
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def check(self) -> None:
        if self.patch not in (4, 8, 16, 32):
            raise ValueError(f"patch must be 4, 8, 16 or 32, got {self.patch}")
        if self.input_height % self.patch or self.input_width % self.patch:
            raise ValueError(f"input {self.input_height}x{self.input_width} must be a multiple of patch {self.patch}")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} must be a multiple of heads {self.heads}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if self.stem not in ("lite0", "conv"):
            raise ValueError(f"stem must be 'lite0' or 'conv', got {self.stem!r}")
        if self.stem == "lite0" and self.patch < 8:
            raise ValueError(f"the lite0 stem has stride 4, so patch must be >= 8, got {self.patch}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.score_map not in ("coarse", "fine"):
            raise ValueError(f"score_map must be 'coarse' or 'fine', got {self.score_map!r}")
        if self.class_pool not in CLASS_POOLS:
            raise ValueError(f"class_pool must be one of {', '.join(CLASS_POOLS)}, got {self.class_pool!r}")
        if self.class_pool == "cls+map+fine" and self.patch < 8:
            raise ValueError(
                f"class_pool 'cls+map+fine' needs stride-4 stem features, so patch must be >= 8, got {self.patch}"
            )
        if self.good_features and self.patch < 8:
            raise ValueError(f"good_features needs stride-4 stem features, so patch must be >= 8, got {self.patch}")
        if not 0 <= self.map_gate <= 4:
            raise ValueError(
                f"map_gate must be between 0 and 4 (the exponent of the score gating the map), got {self.map_gate}"
            )


@dataclass
class StudentOutput:
    score: torch.Tensor  # [N] 0..1
    anomaly_map: torch.Tensor  # [N,1,H,W] 0..1 (gated by the score, see OneNConfig.map_gate)
    class_logits: torch.Tensor  # [N,C]
    attention_maps: list[torch.Tensor]  # per layer [N,h,w], CLS->patch attention averaged over heads (sums to <= 1)
    layer_map_logits: list[torch.Tensor] = field(default_factory=list)  # per layer [N,h,w], logit of the 0..1 layer map
    map_logits: torch.Tensor | None = None  # [N,1,H,W] logit of the map before the score gate (what the losses train)
    score_logit: torch.Tensor | None = None  # [N] (both with the good-feature distances once those are fitted)
    tokens: torch.Tensor | None = None  # [N,h*w,dim] last patch tokens
    cls_token: torch.Tensor | None = None  # [N,dim]
    projected: torch.Tensor | None = None  # [N,teacher_dim,h,w] for feature distillation (when configured)
    class_projected: torch.Tensor | None = None  # [N,teacher_dim] the class head's input projected (when configured)
    stem_features: torch.Tensor | None = None  # [N,c,H/4,W/4] stride-4 stem features (None when patch < 8)

    def layer_maps(self) -> list[torch.Tensor]:
        return [torch.sigmoid(m) for m in self.layer_map_logits]


class ConvStem(nn.Module):
    """Strided 3x3 convs down to the token stride: cheap local features before the transformer.

    forward -> (tokens [N,dim,h,w], stride-4 features [N,fine_channels_in,H/4,W/4], or None when patch < 8)."""

    def __init__(self, cfg: OneNConfig):
        super().__init__()
        layers: list[nn.Module] = []
        channels, stride = 3, 1
        width = cfg.stem_channels
        self.fine_channels_in, self.split = 0, 0
        while stride * 2 < cfg.patch:
            layers += [
                nn.Conv2d(channels, width, 3, 2, 1, bias=False),
                nn.BatchNorm2d(width),
                ACTIVATIONS[cfg.activation](),
            ]
            channels, stride = width, stride * 2
            if stride == 4:
                self.fine_channels_in, self.split = channels, len(layers)
            width = min(width * 2, cfg.dim)
        layers += [nn.Conv2d(channels, cfg.dim, 3, 2, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.split:
            return self.net(x), None
        features = self.net[: self.split](x)
        return self.net[self.split :](features), features


class Lite0Stem(nn.Module):
    """The first layers of EfficientNet-Lite0 (stem conv + 3 MBConv blocks, stride 4, 24 channels) with the
    teacher's ImageNet weights, then a patchify conv to the token grid.

    A transformer trained from scratch on a few hundred images learns low-level texture filters slowly;
    borrowing them from the pretrained CNN is cheap (these layers are ~30% of the teacher's latency) and
    leaves attention, maps and heads to the student.
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

    def __init__(self, in_channels: int, width: int, activation: str):
        super().__init__()
        last = nn.Conv2d(width, 1, 3, 1, 1)
        self.net = nn.Sequential(nn.Conv2d(in_channels + 1, width, 3, 1, 1), ACTIVATIONS[activation](), last)
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
        hidden = int(cfg.dim * cfg.mlp_ratio)
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.attn = Attention(cfg.dim, cfg.heads)
        self.norm2 = nn.LayerNorm(cfg.dim)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.dim, hidden),
            ACTIVATIONS[cfg.activation](),
            nn.Dropout(cfg.dropout),
            nn.Linear(hidden, cfg.dim),
        )

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
        self.patch_head = nn.Sequential(
            nn.Linear(cfg.dim, cfg.dim // 2), ACTIVATIONS[cfg.activation](), nn.Linear(cfg.dim // 2, 1)
        )
        self.score_head = nn.Linear(cfg.dim, 1)
        self.score_from_map = nn.Parameter(torch.tensor(1.0))
        class_width = cfg.dim * (1 if cfg.class_pool == "cls" else 2) + (
            self.stem.fine_channels_in if cfg.class_pool == "cls+map+fine" else 0
        )
        self.class_head = nn.Linear(class_width, cfg.num_classes)
        self.class_projection = (
            nn.Linear(class_width, cfg.teacher_dim) if cfg.class_distill and cfg.teacher_dim > 0 else None
        )
        self.fine_head = (
            FineMapHead(self.stem.fine_channels_in, cfg.fine_channels, cfg.activation)
            if cfg.fine_map and cfg.patch >= 8
            else None
        )
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
        refined = self.fine_head(fine_features, coarse) if self.fine_head is not None else coarse
        score_source = refined if cfg.score_map == "fine" else coarse
        score_logit = self.score_head(cls).reshape(n) + self.score_from_map * score_source.flatten(1).amax(dim=1)
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
        anomaly_map = torch.sigmoid(map_logits)
        if cfg.map_gate > 0:
            anomaly_map = anomaly_map * score.reshape(n, 1, 1, 1) ** cfg.map_gate
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
        parts'
        Gaussians added, all in units of the spread of good held-out images (train.models.good_features): score =
        the two distance peaks + good_own_weight x the student's own score, map = the two distance maps + the same
        weight x the student's map logit, so the map's peak and the score still agree. Fused at the refined map's
        resolution, so the one upsampling to the input size stays the only full-resolution step."""
        good = self.good_features
        assert good is not None  # called only for a student with a good-feature model
        n, (h, w) = tokens.shape[0], self.cfg.grid
        stem_z, token_z = good.distances(fine_features, tokens.transpose(1, 2).reshape(n, -1, h, w))
        size = refined.shape[-2:]
        up = lambda z: z if z.shape[-2:] == size else F.interpolate(z, size=size, mode="bilinear", align_corners=False)  # noqa: E731
        own = self.cfg.good_own_weight
        fused_map = own * good.normaliser(good.MAP, refined) + up(stem_z.unsqueeze(1)) + up(token_z.unsqueeze(1))
        fused_score = (
            own * good.normaliser(good.SCORE, score_logit)
            + stem_z.flatten(1).amax(dim=1)
            + token_z.flatten(1).amax(dim=1)
        )
        return fused_score, fused_map

    def _class_input(
        self,
        cls: torch.Tensor,
        tokens: torch.Tensor,
        coarse: torch.Tensor,
        refined: torch.Tensor,
        fine_features: torch.Tensor | None,
    ) -> torch.Tensor:
        """What the class head reads (OneNConfig.class_pool): the CLS token, + the tokens pooled where the coarse map is
        bright, + the stride-4 stem features pooled where the refined map is bright."""
        if self.cfg.class_pool == "cls":
            return cls
        where = torch.softmax(coarse.flatten(1), dim=1).unsqueeze(1)  # [N, 1, h*w]
        parts = [cls, torch.matmul(where, tokens).squeeze(1)]  # the weighted sum over tokens, one matmul
        if self.cfg.class_pool == "cls+map+fine":
            assert fine_features is not None  # OneNConfig: cls+map+fine needs the stride-4 stem features
            if self.fine_head is None:  # no refined map: the coarse one, upsampled
                refined = F.interpolate(coarse, size=fine_features.shape[-2:], mode="bilinear", align_corners=False)
            fine_where = torch.softmax(refined.flatten(1), dim=1).unsqueeze(2)  # [N, H/4*W/4, 1]
            parts.append(torch.matmul(fine_features.flatten(2), fine_where).squeeze(2))
        return torch.cat(parts, dim=1)


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
