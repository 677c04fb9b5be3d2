"""CEOD: Cross-Entropy Overlap Distance (seed 001, Fraccaroli et al., eq. 7-8).

    CEOD = 1/N sum_i [ ce_i + omega * y_i * OD_i ]
    OD   = -log( clip_eps( sum(A_d * A_gt*) / min(sum A_d, sum A_gt*) ) )

A_d is the differentiable Grad-CAM heat map (0..1) of the defect class, A_gt* the AOI / defect mask
convolved with a 3x3 kernel of 0.5 (a soft one-pixel widening, the paper's "distance"), y_i = 1 for
defective images only (a good image has no hot region to place). The clip to [eps, 1 - eps] keeps the
log finite; omega = 0.001 in the paper.

Images whose defect class is unknown (synthetic defects, class index -1) are a "generic defect": their
cross-entropy is -log(sum of the defect classes' probabilities) = -log(1 - p(good)), which trains the
score without claiming a class, and they still get the OD term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

UNKNOWN_DEFECT = -1
OMEGA = 0.001
CLIP_EPS = 1e-7


def spread_mask(mask: torch.Tensor) -> torch.Tensor:
    """A_gt*: mask [N, H, W] convolved with the 3x3 kernel of 0.5 (zero padding), then capped at 1.

    The raw convolution of a 0/1 mask reaches 4.5 inside the region. Values above 1 are clamped to 1:
    uncapped, the ratio of eq. 8 would exceed 1 as soon as half of the heat map sat deep inside the
    mask, and the clip would then hide every heat outside it. Capped, the inside stays 1 and the
    one-pixel ring outside gets 1 (next to an edge: 2-3 mask neighbours) or 0.5 (at a corner: 1).
    """
    kernel = torch.full((1, 1, 3, 3), 0.5, dtype=mask.dtype, device=mask.device)
    return F.conv2d(mask[:, None].float(), kernel, padding=1)[:, 0].clamp(max=1.0)


def overlap_distance(cam: torch.Tensor, region: torch.Tensor, eps: float = CLIP_EPS) -> torch.Tensor:
    """OD per image [N]. cam [N, h, w] in 0..1 (bilinearly resized to the region's size), region [N, H, W] in 0..1.
    The one overlap term of the project: CEOD's (the teacher's Grad-CAM) and the student's AOI guidance
    (train.losses.attention_overlap_loss, its attention maps against the AOI)."""
    if cam.shape[-2:] != region.shape[-2:]:
        cam = F.interpolate(cam[:, None], size=tuple(region.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
    target = spread_mask(region)
    intersection = (cam * target).sum(dim=(1, 2))
    smaller = torch.minimum(cam.sum(dim=(1, 2)), target.sum(dim=(1, 2)))
    # An all-zero heat map (or region) has no overlap: the ratio is 0, clipped to eps (OD = -log eps).
    overlap = intersection / smaller.clamp_min(1e-12)
    return -torch.log(overlap.clamp(eps, 1.0 - eps))


def defect_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-image cross-entropy [N]; target -1 (unknown defect class) -> -log p(any defect class)."""
    targets = targets.long()
    unknown = targets == UNKNOWN_DEFECT
    log_p = torch.log_softmax(logits, dim=1)
    known_ce = -log_p.gather(1, targets.clamp_min(0)[:, None])[:, 0]
    generic_ce = -torch.logsumexp(log_p[:, 1:], dim=1)
    return torch.where(unknown, generic_ce, known_ce)


def classification_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Plain cross-entropy (the "ce" option), with the same handling of unknown defect classes."""
    return defect_cross_entropy(logits, targets).mean()


def ceod_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    cam: torch.Tensor,
    aoi_or_mask: torch.Tensor,
    is_defect: torch.Tensor,
    omega: float = OMEGA,
    eps: float = CLIP_EPS,
    return_terms: bool = False,
):
    """Eq. 7: mean over the batch of ce_i + omega * y_i * OD_i (y_i = is_defect). Scalar.

    With return_terms=True also returns (mean ce, mean OD over the defective images, or 0 when none)
    for logging.
    """
    ce = defect_cross_entropy(logits, targets)
    od = overlap_distance(cam, aoi_or_mask.to(cam.dtype), eps)
    y = is_defect.to(ce.dtype)
    loss = (ce + omega * y * od).mean()
    if not return_terms:
        return loss
    od_defective = (od * y).sum() / y.sum().clamp_min(1.0)
    return loss, ce.mean().detach(), od_defective.detach()
