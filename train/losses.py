"""Student losses: progressive focal loss on attention maps, AOI guidance, distillation from the teacher.

Choices (documented here because the OneN paper is only known to us by its abstract):
- Progressive weights: layer l (1-based) of L gets w_l = l / sum_{k=1..L} k. They increase with depth and
  sum to 1, so early layers are nudged towards the defect while the deepest layers, whose attention
  feeds the final map most directly, are held to it hardest. The final map's focal loss is added with
  weight 1 on top (total = sum_l w_l * FL(layer_l) + FL(final)).
- Focal loss: binary focal loss on logits, FL = alpha_t * (1 - p_t)^gamma * BCE, gamma = 2, averaged over
  pixels. Soft targets (0..1) are allowed. Layer logits are upsampled bilinearly to the target size.
  The final map's loss is the mean over the batch's defect pixels and the mean over its other pixels, averaged
  (every defect pixel counts alike, as in pixel AUROC); each layer's is the same per image, then averaged over
  images (a small defect is not drowned by the background of its image).
- AOI guidance: the CEOD overlap term of seed 001 (train.losses_ceod.overlap_distance, the same function) applied
  to each layer's CLS->patch attention, with the AOI resized to the attention grid (area average).
  Attention entirely inside the AOI gives 0, attention outside it a large value. Weighted progressively
  like the focal loss. It is applied to every image (good ones too): on a good part the CLS token
  should look at itself or at the AOI, never at the clutter around it. A second, simpler term penalises
  the final map's mean value outside the AOI (the map must stay dark where a defect does not count), and a
  third its peak outside the AOI (outside_peak_loss): the score reads the map's maximum, so a single bright
  spot on the clutter beside a good part is what rejects it, and a mean hardly sees it.
- Distillation: KL(teacher || student) on class logits with temperature T (scaled by T^2, Hinton),
  cosine feature matching between the student's projected patch tokens and the teacher's last conv
  features resized to the student grid, and between the class head's projected input and the teacher's
  pooled features (what its classifier reads).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from onen.train.losses_ceod import overlap_distance


def progressive_weights(depth: int, device=None) -> torch.Tensor:
    """w_l = l / sum(1..L) for l = 1..L: increasing with depth, summing to 1."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    layers = torch.arange(1, depth + 1, dtype=torch.float32, device=device)
    return layers / layers.sum()


def focal_loss_with_logits(
    logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float | None = None, reduction: str = "mean"
) -> torch.Tensor:
    """Binary focal loss on logits against 0..1 targets (same shape)."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    loss = bce * (1 - p_t).pow(gamma)
    if alpha is not None:
        loss = loss * (alpha * target + (1 - alpha) * (1 - target))
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.mean()


def _per_image_focal(logits: torch.Tensor, target: torch.Tensor, gamma: float, alpha: float | None) -> torch.Tensor:
    """Focal loss per image [N]: mean over defect pixels and mean over the other pixels, averaged, so a 20-pixel
    blowhole weighs as much as a large crack (a plain mean lets the background drown it)."""
    loss = focal_loss_with_logits(logits, target, gamma, alpha, reduction="none").flatten(1)
    positive = target.flatten(1)
    negative = 1 - positive
    pos_mass, neg_mass = positive.sum(1), negative.sum(1)
    pos_term = (loss * positive).sum(1) / pos_mass.clamp(min=1e-6)
    neg_term = (loss * negative).sum(1) / neg_mass.clamp(min=1e-6)
    has_positive = (pos_mass > 0.5).float()
    return has_positive * 0.5 * (pos_term + neg_term) + (1 - has_positive) * neg_term


def _batch_balanced_focal(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, gamma: float, alpha: float | None
) -> torch.Tensor:
    """Focal loss as the mean over all defect pixels of the batch and the mean over all other pixels, averaged.
    Each defect pixel counts alike, as in pixel AUROC: a large uneven region weighs by its area. weight [N]."""
    loss = focal_loss_with_logits(logits, target, gamma, alpha, reduction="none").flatten(1)
    positive = target.flatten(1) * weight[:, None]
    negative = (1 - target.flatten(1)) * weight[:, None]
    neg_term = (loss * negative).sum() / negative.sum().clamp(min=1e-6)
    if positive.sum() < 0.5:
        return neg_term
    return 0.5 * ((loss * positive).sum() / positive.sum() + neg_term)


def progressive_focal_loss(
    layer_logits: list[torch.Tensor],
    final_logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    gamma: float = 2.0,
    alpha: float | None = None,
) -> torch.Tensor:
    """sum_l w_l * FL(upsample(layer_l), target) + FL(final, target) over the images with a valid target: the final
    map balanced over the batch's pixels (_batch_balanced_focal), each layer's per image (_per_image_focal).

    layer_logits: per layer [N,h,w] map logits; final_logits [N,1,H,W] or [N,H,W]; target [N,H,W] in 0..1;
    valid [N] bool (images whose target is known; others contribute nothing).
    """
    n, height, width = target.shape
    if valid is None:
        valid = torch.ones(n, dtype=torch.bool, device=target.device)
    weight = valid.float()
    if weight.sum() == 0:
        return final_logits.sum() * 0.0
    weights: torch.Tensor | list[float] = (
        progressive_weights(len(layer_logits), device=target.device) if layer_logits else []
    )
    final = final_logits[:, 0] if final_logits.dim() == 4 else final_logits
    upsampled = [
        F.interpolate(logits.unsqueeze(1), size=(height, width), mode="bilinear", align_corners=False)[:, 0]
        for logits in layer_logits
    ]

    def per_image(logits: torch.Tensor) -> torch.Tensor:
        return (_per_image_focal(logits, target, gamma, alpha) * weight).sum() / weight.sum()

    total = sum(w_l * per_image(up) for w_l, up in zip(weights, upsampled, strict=True))
    return total + _batch_balanced_focal(final, target, weight, gamma, alpha)


def attention_overlap_loss(attention: torch.Tensor, aoi: torch.Tensor) -> torch.Tensor:
    """CEOD's overlap distance [N] of one attention map [N,h,w] with the AOI [N,H,W] area-resized to its grid."""
    height, width = attention.shape[-2:]
    grid = F.adaptive_avg_pool2d(aoi.unsqueeze(1).float(), (height, width))[:, 0]
    return overlap_distance(attention, grid)


def aoi_guidance_loss(
    attention_maps: list[torch.Tensor],
    aoi: torch.Tensor,
    final_map: torch.Tensor | None = None,
    map_weight: float = 1.0,
) -> torch.Tensor:
    """Progressively weighted CEOD overlap of every layer's attention with the AOI (+ out-of-AOI map mean)."""
    weights = progressive_weights(len(attention_maps), device=aoi.device)
    loss = sum(w * attention_overlap_loss(a, aoi).mean() for w, a in zip(weights, attention_maps, strict=True))
    if final_map is not None:
        probability = final_map[:, 0] if final_map.dim() == 4 else final_map
        outside = 1.0 - aoi
        loss = (
            loss
            + map_weight
            * (probability * outside).flatten(1).sum(1).div(outside.flatten(1).sum(1).clamp(min=1.0)).mean()
        )
    return loss


def outside_peak_loss(map_logits: torch.Tensor, aoi: torch.Tensor, top_fraction: float = 0.01) -> torch.Tensor:
    """softplus of the mean of the brightest `top_fraction` map logits outside the AOI, averaged over the images
    that have an outside. The score reads the map's maximum, so one bright spot on the clutter beside a good part
    rejects it; a mean over the outside (as in aoi_guidance_loss) barely sees such a spot, its peak does."""
    logits = (map_logits[:, 0] if map_logits.dim() == 4 else map_logits).flatten(1)
    outside = aoi.flatten(1) < 0.5
    counts = outside.sum(dim=1)
    if int(counts.max()) == 0:
        return logits.sum() * 0.0
    k = max(1, int(top_fraction * logits.shape[1]))
    top = logits.masked_fill(~outside, float("-inf")).topk(k, dim=1).values  # [N, k]; -inf where too few outside
    valid = torch.isfinite(top)
    peak = torch.where(valid, top, torch.zeros_like(top)).sum(1) / valid.sum(1).clamp(min=1)
    has_outside = (counts > 0).float()
    return (F.softplus(peak) * has_outside).sum() / has_outside.sum()


def out_of_aoi_mass(attention: torch.Tensor, aoi: torch.Tensor) -> torch.Tensor:
    """Fraction of attention mass outside the AOI per image [N] (a diagnostic, 0 = all inside)."""
    n, height, width = attention.shape
    grid = F.adaptive_avg_pool2d(aoi.unsqueeze(1).float(), (height, width))[:, 0]
    total = attention.flatten(1).sum(1).clamp(min=1e-9)
    return (attention * (1 - grid)).flatten(1).sum(1) / total


def logit_distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0
) -> torch.Tensor:
    """Hinton KL(teacher || student) at temperature T, times T^2 so gradients keep their scale."""
    if student_logits.shape[1] < 2:
        return student_logits.sum() * 0.0
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    teacher = F.softmax(teacher_logits.detach() / temperature, dim=1)
    return F.kl_div(log_student, teacher, reduction="batchmean") * temperature**2


def feature_distillation_loss(student_projected: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity per position between student tokens (projected) and teacher features on the student
    grid."""
    teacher = F.interpolate(
        teacher_features.detach(), size=student_projected.shape[-2:], mode="bilinear", align_corners=False
    )
    return (1 - F.cosine_similarity(student_projected, teacher, dim=1)).mean()


def pooled_feature_distillation_loss(student_vector: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity between a per-image student vector [N,C] and the teacher's features pooled over
    space [N,C,h,w]."""
    return (1 - F.cosine_similarity(student_vector, teacher_features.detach().float().mean(dim=(2, 3)), dim=1)).mean()


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy ignoring class index -1 (synthetic defects of unknown class); 0 when nothing is left."""
    if logits.shape[1] < 2 or (target >= 0).sum() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, ignore_index=-1)
