"""The student's total objective: the defect-class terms ask "which defect" on defective images only."""

from __future__ import annotations

import pytest
import torch

from onen.train.models.onen_vit import StudentOutput
from onen.train.student_objective import ObjectiveWeights, TeacherTargets, student_objective


def _output(class_logits: torch.Tensor) -> StudentOutput:
    n = class_logits.shape[0]
    return StudentOutput(
        score=torch.full((n,), 0.5),
        anomaly_map=torch.zeros(n, 1, 8, 8),
        class_logits=class_logits,
        attention_maps=[torch.full((n, 2, 2), 0.1)],
        layer_map_logits=[torch.full((n, 2, 2), -4.0)],
        map_logits=torch.full((n, 1, 8, 8), -4.0),
        score_logit=torch.zeros(n),
    )


def _batch(n: int = 3):
    label = torch.tensor([0, 1, 1])[:n]
    class_index = torch.tensor([0, 2, 3])[:n]
    return label, class_index, torch.zeros(n, 8, 8), torch.ones(n, dtype=torch.bool), torch.ones(n, 8, 8)


def test_defect_class_terms_reward_the_right_defect_and_ignore_good_images():
    label, class_index, mask, has_mask, aoi = _batch()
    right = torch.full((3, 4), -5.0)
    right[0, 0], right[1, 2], right[2, 3] = 5.0, 5.0, 5.0
    wrong_defect = right.clone()
    wrong_defect[1, 2], wrong_defect[1, 3] = -5.0, 5.0  # image 1 called class 3 instead of 2
    teacher = TeacherTargets(logits=right.clone())
    weights = ObjectiveWeights(classes=0.0, kd=0.0, defect_class=1.0, kd_defect=1.0, aoi_guidance=False)
    _, good_parts = student_objective(_output(right), label, class_index, mask, has_mask, aoi, weights, teacher)
    _, bad_parts = student_objective(_output(wrong_defect), label, class_index, mask, has_mask, aoi, weights, teacher)
    assert good_parts["defect_class"] < 0.01 and good_parts["kd_defect"] < 0.01
    assert bad_parts["defect_class"] > 1.0 and bad_parts["kd_defect"] > 1.0
    # the good image's logits do not enter the defect terms
    other_good = right.clone()
    other_good[0] = torch.tensor([-5.0, 5.0, -5.0, -5.0])
    _, parts = student_objective(
        _output(other_good), label, class_index, mask, has_mask, aoi, weights, TeacherTargets(logits=right.clone())
    )
    assert parts["defect_class"] == good_parts["defect_class"] and parts["kd_defect"] == good_parts["kd_defect"]


def test_defect_class_terms_are_off_by_weight_and_without_defects():
    label, class_index, mask, has_mask, aoi = _batch(1)  # one good image only
    logits = torch.zeros(1, 4, requires_grad=True)
    weights = ObjectiveWeights(defect_class=1.0, kd_defect=1.0, aoi_guidance=False)
    total, parts = student_objective(
        _output(logits), label, class_index, mask, has_mask, aoi, weights, TeacherTargets(logits=torch.zeros(1, 4))
    )
    assert parts["defect_class"] == 0.0 and parts["kd_defect"] == 0.0
    total.backward()  # still differentiable
    _, parts = student_objective(
        _output(torch.zeros(1, 4)),
        label,
        class_index,
        mask,
        has_mask,
        aoi,
        ObjectiveWeights(defect_class=0.0, kd_defect=0.0, aoi_guidance=False),
    )
    assert "defect_class" not in parts and "kd_defect" not in parts


def test_score_distillation_follows_the_teachers_defect_probability():
    label, class_index, mask, has_mask, aoi = _batch()
    teacher = TeacherTargets(logits=torch.tensor([[6.0, 0, 0, 0], [-6.0, 6.0, 0, 0], [0.0, 0, 0, 0]]))
    p_defect = 1 - torch.softmax(teacher.logits, dim=1)[:, 0]
    weights = ObjectiveWeights(kd_score=1.0, aoi_guidance=False)
    agreeing = _output(torch.zeros(3, 4))
    agreeing.score_logit = torch.log(p_defect / (1 - p_defect))
    disagreeing = _output(torch.zeros(3, 4))
    disagreeing.score_logit = -agreeing.score_logit
    _, parts_agree = student_objective(agreeing, label, class_index, mask, has_mask, aoi, weights, teacher)
    _, parts_disagree = student_objective(disagreeing, label, class_index, mask, has_mask, aoi, weights, teacher)
    assert parts_agree["kd_score"] < parts_disagree["kd_score"] - 1.0


def test_class_feature_term_pulls_the_class_input_towards_the_teachers_pooled_features():
    label, class_index, mask, has_mask, aoi = _batch()
    teacher_features = torch.randn(3, 6, 2, 2)
    pooled = teacher_features.mean(dim=(2, 3))
    weights = ObjectiveWeights(kd=0.0, feature=0.0, kd_defect=0.0, class_feature=1.0, aoi_guidance=False)
    aligned, opposite = _output(torch.zeros(3, 4)), _output(torch.zeros(3, 4))
    aligned.class_projected, opposite.class_projected = 2.0 * pooled, -pooled
    teacher = TeacherTargets(logits=torch.zeros(3, 4), features=teacher_features)
    _, near = student_objective(aligned, label, class_index, mask, has_mask, aoi, weights, teacher)
    _, far = student_objective(opposite, label, class_index, mask, has_mask, aoi, weights, teacher)
    assert near["class_feat"] < 1e-5 and abs(far["class_feat"] - 2.0) < 1e-5
    _, without = student_objective(
        _output(torch.zeros(3, 4)), label, class_index, mask, has_mask, aoi, weights, teacher
    )
    assert "class_feat" not in without  # a student built without the projection skips the term


def test_a_run_of_the_old_format_is_refused_and_a_new_one_round_trips():
    """A run saved before the input geometry (square `size`, no format) is refused by name, not rebuilt by guesses;
    a run of this format comes back with its own objective."""
    from onen.train.runs import RunError
    from onen.train.trainer import TrainConfig

    with pytest.raises(RunError, match=r"runs/a/config.json: run format 'onen-run/1', this onen reads 'onen-run/3'"):
        TrainConfig.from_dict({"data": "d", "out": "o", "size": 128, "weights": {"image": 1.0}}, "runs/a/config.json")
    new = TrainConfig(data="d", out="o")
    assert (new.weights.kd_score, new.weights.class_feature, new.weights.aoi_peak) == (1.0, 1.0, 3.0)
    again = TrainConfig.from_dict(new.to_dict())
    assert again == new
    assert new.objective_weights().kd_score == 1.0
    assert (
        TrainConfig(data="d", out="o", supervision="none").objective_weights().kd_score == 0.0
    )  # that teacher saw no defect
    assert TrainConfig(data="d", out="o", aoi_guidance=False).objective_weights().aoi_guidance is False
