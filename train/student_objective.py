"""The student's total training objective for one batch (train.trainer and the small recipe, train.recipes).

total = w_image * BCE(score, label) + w_class * CE(class, ignoring -1) + w_map * progressive focal loss
        + (AOI guidance on) w_aoi * attention and map mean outside the AOI + w_aoi_peak * map peak outside the AOI
        + w_kd * KL(teacher logits) + w_feat * feature matching
        + w_defect_class * CE(defect logits only, defective images) + w_kd_defect * KL(teacher's defect logits,
        defective images)
        + w_kd_score * BCE(score, the teacher's defect probability 1 - p_good)
        + w_class_feature * (1 - cos(class head input projected, the teacher's pooled features))

kd_score hands the teacher's image-level ranking (its hard cases) to the score head, which the class logits' KL
does not reach. The two "defect" terms ask what the class accuracy measures (which defect, given there is one),
which the good-vs-defect margin dominates in the plain CE and KL. Measurements: docs/experiments.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from onen.train.config import ObjectiveWeights
from onen.train.losses import (
    aoi_guidance_loss,
    feature_distillation_loss,
    logit_distillation_loss,
    masked_cross_entropy,
    outside_peak_loss,
    pooled_feature_distillation_loss,
    progressive_focal_loss,
)
from onen.train.models.onen_vit import StudentOutput


@dataclass
class TeacherTargets:
    """What the teacher says about a batch (computed without gradients)."""

    logits: torch.Tensor | None = None  # [N,C]
    features: torch.Tensor | None = None  # [N,Cf,h,w]


def student_objective(
    out: StudentOutput,
    label: torch.Tensor,
    class_index: torch.Tensor,
    mask: torch.Tensor,
    has_mask: torch.Tensor,
    aoi: torch.Tensor,
    weights: ObjectiveWeights,
    teacher: TeacherTargets | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss and its parts (floats, for the progress bar) for one batch.

    label [N] 0/1; class_index [N] (-1 = unknown class); mask [N,H,W] target 0..1 (a good image's target is
    all zeros, so it always counts); has_mask [N] bool; aoi [N,H,W] (all ones when none).
    """
    assert out.score_logit is not None and out.map_logits is not None  # OneNStudent.forward gives both
    parts: dict[str, torch.Tensor] = {}
    parts["image"] = F.binary_cross_entropy_with_logits(out.score_logit, label.float())
    parts["class"] = masked_cross_entropy(out.class_logits, class_index)
    valid = has_mask | (label == 0)
    parts["map"] = progressive_focal_loss(
        out.layer_map_logits,
        out.map_logits,
        mask,
        valid,
        gamma=weights.focal_gamma,
    )
    total = weights.image * parts["image"] + weights.classes * parts["class"] + weights.maps * parts["map"]
    if weights.aoi_guidance and weights.aoi > 0:
        ungated = torch.sigmoid(out.map_logits) if out.map_logits is not None else out.anomaly_map
        parts["aoi"] = aoi_guidance_loss(out.attention_maps, aoi, ungated)
        total = total + weights.aoi * parts["aoi"]
        if weights.aoi_peak > 0 and out.map_logits is not None:
            parts["aoi_peak"] = outside_peak_loss(out.map_logits, aoi)
            total = total + weights.aoi_peak * parts["aoi_peak"]
    if teacher is not None and teacher.logits is not None and weights.kd > 0:
        parts["kd"] = logit_distillation_loss(out.class_logits, teacher.logits, weights.temperature)
        total = total + weights.kd * parts["kd"]
    defective = class_index >= 1
    if weights.defect_class > 0 and out.class_logits.shape[1] > 2:
        parts["defect_class"] = masked_cross_entropy(
            out.class_logits[:, 1:], torch.where(defective, class_index - 1, -1)
        )
        total = total + weights.defect_class * parts["defect_class"]
    if teacher is not None and teacher.logits is not None and weights.kd_defect > 0 and out.class_logits.shape[1] > 2:
        with_defect = label > 0
        if with_defect.any():
            parts["kd_defect"] = logit_distillation_loss(
                out.class_logits[with_defect, 1:], teacher.logits[with_defect, 1:], weights.temperature
            )
        else:
            parts["kd_defect"] = out.class_logits.sum() * 0.0
        total = total + weights.kd_defect * parts["kd_defect"]
    if teacher is not None and teacher.logits is not None and weights.kd_score > 0 and teacher.logits.shape[1] > 1:
        teacher_defect = 1 - torch.softmax(teacher.logits.float(), dim=1)[:, 0]
        parts["kd_score"] = F.binary_cross_entropy_with_logits(out.score_logit, teacher_defect.detach())
        total = total + weights.kd_score * parts["kd_score"]
    if teacher is not None and teacher.features is not None and out.projected is not None and weights.feature > 0:
        parts["feat"] = feature_distillation_loss(out.projected, teacher.features)
        total = total + weights.feature * parts["feat"]
    if (
        teacher is not None
        and teacher.features is not None
        and out.class_projected is not None
        and weights.class_feature > 0
    ):
        parts["class_feat"] = pooled_feature_distillation_loss(out.class_projected, teacher.features)
        total = total + weights.class_feature * parts["class_feat"]
    return total, {name: float(value.detach()) for name, value in parts.items()}
