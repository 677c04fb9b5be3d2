"""Fine-tuning the EfficientNet-Lite0 teacher as a defect classifier (good + K classes), CE or CEOD.

The loop follows seed 001: adamax, lr 0.002, omega 0.001, the Grad-CAM of the defect class computed
inside the training step so the OD term backpropagates through it. What the OD term compares the heat
map with: the defect's pixel mask when the image has one (the defect must be found where it is), else
the area of interest (all ones when there is none, which makes OD zero: it cannot guide anything).
Which class the heat map explains: the labelled class; for synthetic defects of unknown class (index -1)
the most likely defect class. Unknown-class images count as "some defect" in the cross-entropy
(see train.losses_ceod.defect_cross_entropy), so they train the score without claiming a class.

Checkpoints are written after every epoch (model, optimiser, history); running again with the same
out_dir resumes after the last finished epoch. Data order is seeded per epoch, so a resumed run sees
the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from onen.edge.errors import OnenError
from onen.train import distributed
from onen.train.gradcam import grad_cam
from onen.train.losses_ceod import CLIP_EPS, OMEGA, ceod_loss, classification_loss
from onen.train.models.efficientnet_lite import EfficientNetLite, build_teacher
from onen.train.runtime import pick_device, seed_everything

log = logging.getLogger(__name__)

CHECKPOINT = "teacher_checkpoint.pt"
HISTORY = "teacher_history.json"


@dataclass
class TeacherConfig:
    """What one teacher fine-tuning needs. The run's settings (epochs, batch, input, seed, frozen blocks) have no
    default here: `onen train` passes TrainConfig's, the single source of their defaults."""

    epochs: int
    batch_size: int
    input_height: int  # what the data set delivers; recorded with the checkpoint
    input_width: int
    seed: int
    # Stem + this many leading MBConv blocks stay frozen at their ImageNet weights and BN statistics.
    # 0 = fine-tune everything; 10 leaves the last 19 conv layers trainable, about seed 001's "last 20".
    freeze_blocks: int
    lr: float = 0.002  # adamax, as in seed 001
    weight_decay: float = 0.0
    loss: str = "ceod"  # "ce" (the teacher bench's comparison) | "ceod"
    omega: float = OMEGA
    clip_eps: float = CLIP_EPS

    def __post_init__(self):
        if self.loss not in ("ce", "ceod"):
            raise OnenError(f"TeacherConfig.loss must be 'ce' or 'ceod', got {self.loss!r}")
        if not 0 <= self.freeze_blocks <= 16:
            raise OnenError(
                f"TeacherConfig.freeze_blocks must be 0..16 (Lite0 has 16 blocks), got {self.freeze_blocks}"
            )


class TeacherCheckpointError(OnenError):
    """A checkpoint in out_dir belongs to a differently configured run."""


def frozen_modules(model: EfficientNetLite, freeze_blocks: int) -> list[torch.nn.Module]:
    """Stem + leading blocks, with gradients switched off (call .eval() on them after model.train())."""
    if freeze_blocks == 0:
        return []
    modules = [model.stem, *list(model.blocks)[:freeze_blocks]]
    for module in modules:
        module.requires_grad_(False)
    return modules


def defect_class_for_cam(logits: torch.Tensor, class_index: torch.Tensor) -> torch.Tensor:
    """The class whose heat map OD judges: the labelled defect class, else the most likely defect class."""
    predicted = logits.detach()[:, 1:].argmax(dim=1) + 1
    return torch.where(class_index > 0, class_index, predicted)


def target_region(batch: dict, device: torch.device) -> torch.Tensor:
    """A_gt per image: the pixel mask when the image has one, else its AOI."""
    has_mask = batch["has_mask"].to(device).view(-1, 1, 1)
    return torch.where(has_mask, batch["mask"].to(device), batch["aoi"].to(device))


def training_step(model: EfficientNetLite, batch: dict, cfg: TeacherConfig, device: torch.device):
    """Loss of one batch -> (loss, ce, od) ; od is 0 for plain CE."""
    images = batch["image"].to(device)
    targets = batch["class_index"].to(device)
    features, logits = model.forward_features(images)
    if cfg.loss == "ce":
        loss = classification_loss(logits, targets)
        return loss, loss.detach(), torch.zeros(())
    is_defect = batch["label"].to(device) == 1
    cam = grad_cam(features, logits, defect_class_for_cam(logits, targets))
    return ceod_loss(
        logits,
        targets,
        cam,
        target_region(batch, device),
        is_defect,
        omega=cfg.omega,
        eps=cfg.clip_eps,
        return_terms=True,
    )


def predict(model: EfficientNetLite, dataset: Dataset, batch_size: int = 32, device=None) -> dict:
    """Scores (1 - p(good)), predicted classes and the labels of a data set, as numpy arrays (each rank of a job
    predicts its shard, every rank gets the whole: train.distributed.sharded)."""
    return distributed.sharded(_predict, model, dataset, batch_size, device)


@torch.no_grad()
def _predict(model: EfficientNetLite, dataset: Dataset, batch_size: int, device) -> dict:
    device = pick_device(device)
    was_training = model.training
    model.eval().to(device)
    out: dict[str, list[Any]] = {"score": [], "predicted": [], "label": [], "class_index": []}
    # Own generator: a DataLoader otherwise draws its seed from the global RNG, and validating would
    # change the dropout draws of the next training epoch.
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, generator=torch.Generator()):
        probabilities = model(batch["image"].to(device)).softmax(dim=1).cpu()
        out["score"].append(1.0 - probabilities[:, 0])
        out["predicted"].append(probabilities.argmax(dim=1))
        out["label"].append(batch["label"])
        out["class_index"].append(batch["class_index"])
    model.train(was_training)
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def teacher_metrics(predictions: dict) -> dict:
    """Image AUROC of the score, accuracy at p(good) < 0.5, and class accuracy on images of known class."""
    from sklearn.metrics import roc_auc_score

    label, score = predictions["label"], predictions["score"]
    known = predictions["class_index"] >= 0
    metrics = {
        "image_auroc": float(roc_auc_score(label, score)) if len(set(label.tolist())) == 2 else None,
        "accuracy": float(((score >= 0.5).astype(int) == label).mean()),
        "class_accuracy": float((predictions["predicted"][known] == predictions["class_index"][known]).mean())
        if known.any()
        else None,
    }
    defective = known & (label == 1)
    metrics["defect_class_accuracy"] = (
        float((predictions["predicted"][defective] == predictions["class_index"][defective]).mean())
        if defective.any()
        else None
    )
    return metrics


def _config_key(cfg: TeacherConfig, num_classes: int) -> dict:
    key = asdict(cfg)
    key.pop("epochs")  # more epochs may be asked for on resume
    if cfg.loss == "ce":  # the OD settings do not change a plain cross-entropy run
        key.pop("omega")
        key.pop("clip_eps")
    return {**key, "num_classes": num_classes}


def fit_teacher(
    train_ds: Dataset,
    val_ds: Dataset | None,
    num_classes: int,
    cfg: TeacherConfig,
    device: str | torch.device | None = None,
    out_dir: str | Path | None = None,
) -> EfficientNetLite:
    """Fine-tune EfficientNet-Lite0 on (good + K classes); returns the model (eval mode) of the best epoch by
    validation image AUROC (accuracy between equals; the last epoch without validation): on both real sets the
    teacher peaked before its last epoch, and the student distils whatever teacher it is given.

    With out_dir, a checkpoint is written after each epoch and an existing one is resumed.
    """
    device = pick_device(device)
    seed_everything(cfg.seed)
    model = build_teacher(num_classes, pretrained=True).to(device)
    frozen = frozen_modules(model, cfg.freeze_blocks)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adamax(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: list[dict] = []
    start_epoch = 0
    best: dict[str, Any] | None = None  # {"epoch", "rank", "model"} of the best validated epoch so far
    out_dir = Path(out_dir) if out_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        checkpoint_path = out_dir / CHECKPOINT
        if checkpoint_path.exists():
            state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
            if state["config_key"] != _config_key(cfg, num_classes):
                raise TeacherCheckpointError(
                    f"{checkpoint_path} was written by another teacher configuration "
                    f"({state['config_key']}); use a new out_dir or delete the checkpoint"
                )
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            history, start_epoch, best = state["history"], state["epoch"], state.get("best")
            torch.set_rng_state(state["torch_rng"])
    step_model = distributed.replicate(model, device, method="forward_features")  # DDP with several ranks

    for epoch in range(start_epoch, cfg.epochs):
        distributed.seed_epoch(cfg.seed, epoch)
        model.train()
        for module in frozen:
            module.eval()  # keep the ImageNet BN statistics of frozen layers
        if hasattr(train_ds, "set_epoch"):
            train_ds.set_epoch(epoch)  # fresh synthetic defects / flips, reproducibly
        loader = distributed.loader(
            train_ds,
            cfg.batch_size,
            shuffle=True,
            seed=cfg.seed * 1000,
            epoch=epoch,
            drop_last=len(train_ds) > cfg.batch_size,  # type: ignore[arg-type]  # map-style data sets have __len__; torch's Dataset does not declare it
        )
        sums = {"loss": 0.0, "ce": 0.0, "od": 0.0}
        started = time.perf_counter()
        bar = tqdm(loader, desc=f"teacher {cfg.loss} epoch {epoch + 1}/{cfg.epochs}", leave=False)
        for step, batch in enumerate(bar, start=1):
            loss, ce, od = training_step(step_model, batch, cfg, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for name, value in (("loss", loss), ("ce", ce), ("od", od)):
                sums[name] += float(value.detach())
            bar.set_postfix(loss=f"{sums['loss'] / step:.4f}", od=f"{sums['od'] / step:.3f}")
        distributed.average_buffers(model)
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "seconds": time.perf_counter() - started,
            **{k: v / max(len(loader), 1) for k, v in sums.items()},
        }
        if val_ds is not None and len(val_ds) > 0:  # type: ignore[arg-type]  # map-style data sets have __len__; torch's Dataset does not declare it
            record["val"] = teacher_metrics(predict(model, val_ds, cfg.batch_size, device))
            rank = _rank(record["val"])
            if rank is not None and (best is None or rank > tuple(best["rank"])):
                best = {"epoch": epoch + 1, "rank": rank, "model": copy.deepcopy(model.state_dict())}
        history.append(record)
        tqdm.write(f"teacher epoch {epoch + 1}/{cfg.epochs}: " + json.dumps(record))
        if out_dir is not None and distributed.is_main():
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "epoch": epoch + 1,
                    "history": history,
                    "config_key": _config_key(cfg, num_classes),
                    "config": asdict(cfg),
                    "torch_rng": torch.get_rng_state(),
                    "best": best,
                },
                out_dir / CHECKPOINT,
            )
            (out_dir / HISTORY).write_text(json.dumps(history, indent=2))
        distributed.barrier()  # the epoch's checkpoint is written before the job may stop
    model.history = history
    model.chosen_epoch = cfg.epochs
    if best is not None and best["epoch"] != cfg.epochs:
        model.load_state_dict(best["model"])
        model.chosen_epoch = best["epoch"]
        log.info("teacher: epoch %d of %d kept (best validation image AUROC)", best["epoch"], cfg.epochs)
    return model.eval()


def _rank(figures: dict) -> tuple[float, float] | None:
    """How a validated epoch ranks: image AUROC, then accuracy; None when AUROC is undefined."""
    if figures.get("image_auroc") is None:
        return None
    return float(figures["image_auroc"]), float(figures["accuracy"])


def seconds_spent(out_dir: Path) -> float:
    """Training seconds recorded in teacher_history.json: every epoch, a resumed run's earlier ones too."""
    path = out_dir / HISTORY
    return sum(epoch.get("seconds", 0.0) for epoch in json.loads(path.read_text())) if path.is_file() else 0.0


def load_teacher(checkpoint: str | Path, device=None) -> EfficientNetLite:
    """A fine-tuned teacher from a fit_teacher checkpoint (eval mode)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = build_teacher(state["config_key"]["num_classes"], pretrained=False)
    model.load_state_dict(state["model"])
    model.history = state["history"]
    return model.to(pick_device(device)).eval()
