"""fit_teacher on a tiny generated data set: CEOD runs, checkpoints resume exactly, pseudo masks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from onen.train.data.dataset import InspectionDataset
from onen.train.data.sample import Sample
from onen.train.data.synthetic import SyntheticDefects
from onen.train.models.efficientnet_lite import pseudo_masks
from onen.train.teacher_training import (
    CHECKPOINT,
    TeacherCheckpointError,
    TeacherConfig,
    fit_teacher,
    load_teacher,
)

CLASSES = ["good", "spot"]
SIZE = 64


def _write_data(root: Path, n_good: int = 6, n_spot: int = 4) -> list[Sample]:
    """Grey textured tiles; 'spot' images carry a dark disc and its mask."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n_good + n_spot):
        image = (120 + rng.normal(0, 12, (SIZE, SIZE, 3))).clip(0, 255).astype(np.uint8)
        path = root / f"img_{i}.png"
        if i < n_good:
            cv2.imwrite(str(path), image)
            samples.append(Sample(path, 0, "good"))
            continue
        mask = np.zeros((SIZE, SIZE), np.uint8)
        cv2.circle(mask, (int(rng.integers(12, 52)), int(rng.integers(12, 52))), 7, 255, -1)
        image[mask > 0] = 30
        cv2.imwrite(str(path), image)
        cv2.imwrite(str(root / f"img_{i}_mask.png"), mask)
        samples.append(Sample(path, 1, "spot", mask=root / f"img_{i}_mask.png"))
    return samples


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> InspectionDataset:
    samples = _write_data(tmp_path_factory.mktemp("teacher-data"))
    return InspectionDataset(
        samples, CLASSES, SIZE, SIZE, synthetic=SyntheticDefects(seed=0), synthetic_probability=0.5, seed=0, cache=True
    )


def test_ceod_training_handles_unknown_classes_and_resumes_exactly(dataset, tmp_path):
    assert any(dataset[i]["class_index"].item() == -1 for i in range(len(dataset)))  # synthetic defects present
    cfg = TeacherConfig(
        epochs=2, batch_size=4, input_height=SIZE, input_width=SIZE, seed=0, freeze_blocks=0, loss="ceod", omega=0.01
    )
    straight = fit_teacher(dataset, dataset, len(CLASSES), cfg, device="cpu", out_dir=tmp_path / "straight")
    assert len(straight.history) == 2
    assert all(np.isfinite(r["loss"]) and r["od"] > 0 for r in straight.history)
    assert straight.history[-1]["val"]["image_auroc"] is not None

    interrupted = TeacherConfig(**{**cfg.__dict__, "epochs": 1})
    fit_teacher(dataset, None, len(CLASSES), interrupted, device="cpu", out_dir=tmp_path / "resumed")
    resumed = fit_teacher(dataset, None, len(CLASSES), cfg, device="cpu", out_dir=tmp_path / "resumed")
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    last_epoch = torch.load(tmp_path / "straight" / CHECKPOINT, weights_only=False)["model"]  # straight keeps its best
    for name, tensor in last_epoch.items():
        assert torch.allclose(tensor.float(), resumed.state_dict()[name].float(), atol=1e-5), name

    reloaded = load_teacher(tmp_path / "resumed" / CHECKPOINT)
    image = dataset[0]["image"][None]
    with torch.no_grad():
        assert torch.allclose(reloaded(image), resumed(image), atol=1e-5)

    with pytest.raises(TeacherCheckpointError, match="another teacher configuration"):
        fit_teacher(
            dataset,
            None,
            len(CLASSES),
            TeacherConfig(**{**cfg.__dict__, "loss": "ce"}),
            device="cpu",
            out_dir=tmp_path / "resumed",
        )


def test_the_teacher_of_the_best_validated_epoch_is_kept_and_survives_a_resume(dataset, tmp_path):
    cfg = TeacherConfig(
        epochs=3, batch_size=4, input_height=SIZE, input_width=SIZE, seed=0, freeze_blocks=0, loss="ce", lr=0.05
    )
    teacher = fit_teacher(dataset, dataset, len(CLASSES), cfg, device="cpu", out_dir=tmp_path / "run")
    ranks = [(r["val"]["image_auroc"], r["val"]["accuracy"]) for r in teacher.history]
    assert teacher.chosen_epoch == 1 + ranks.index(max(ranks))  # the earliest of equals
    state = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=False)
    assert state["best"]["epoch"] == teacher.chosen_epoch
    for name, tensor in state["best"]["model"].items():
        assert torch.equal(tensor, teacher.state_dict()[name]), name
    again = fit_teacher(dataset, dataset, len(CLASSES), cfg, device="cpu", out_dir=tmp_path / "run")  # all done
    assert again.chosen_epoch == teacher.chosen_epoch


def test_plain_ce_training_with_frozen_leading_blocks(dataset, tmp_path):
    from onen.train.models.efficientnet_lite import build_teacher

    cfg = TeacherConfig(epochs=1, batch_size=5, input_height=SIZE, input_width=SIZE, seed=0, freeze_blocks=3, loss="ce")
    model = fit_teacher(dataset, None, len(CLASSES), cfg, device="cpu")
    assert model.history[0]["od"] == 0 and np.isfinite(model.history[0]["ce"])
    imagenet = build_teacher(len(CLASSES)).state_dict()
    trained = model.state_dict()
    for name in ("stem.conv.weight", "stem.bn.running_mean", "blocks.2.project.bn.running_var"):
        assert torch.equal(trained[name], imagenet[name]), name  # frozen: weights and BN stats
    assert not torch.equal(trained["blocks.3.project.conv.weight"], imagenet["blocks.3.project.conv.weight"])
    assert not (tmp_path / CHECKPOINT).exists()


def test_pseudo_masks_at_input_resolution(dataset):
    from onen.train.models.efficientnet_lite import build_teacher

    teacher = build_teacher(len(CLASSES)).train()
    images = torch.stack([dataset[i]["image"] for i in range(3)])
    maps = pseudo_masks(teacher, images, batch_size=2)
    assert maps.shape == (3, SIZE, SIZE) and not maps.requires_grad
    assert maps.min() >= 0 and maps.max() <= 1
    peaks = maps.amax(dim=(1, 2))  # normalised per image: peak 1, or 0 when ReLU left nothing
    assert torch.all((peaks > 0.9) | (peaks == 0)) and peaks.max() > 0.9
    assert teacher.training  # mode restored
    assert all(p.grad is None for p in teacher.parameters())  # weights untouched
    assert torch.allclose(teacher.pseudo_masks(images), maps)
