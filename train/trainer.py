"""`onen train`: the teacher first (EfficientNet-Lite0, CEOD where an AOI/mask exists), then the OneN student
distilled from it, under one of three supervision levels.

- full: pixel masks are the student's map targets.
- weak: image labels only; the map targets of defective images are the teacher's Grad-CAM pseudo-masks.
- none: good images only; synthetic defects (train.data.synthetic) give defective images and their masks.

Fixed seeds, CPU by default (CUDA when present), a checkpoint every epoch that `--resume` continues. `family` "grdnet"
trains GRD-Net instead (train.grdnet_training) after the same preparation (data, splits, geometry).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from onen.edge.errors import OnenError
from onen.train import distributed, runs
from onen.train.config import TrainConfig
from onen.train.geometry import Geometry, resolve_geometry
from onen.train.models.onen_vit import OneNConfig, OneNStudent
from onen.train.models.tiled import whole_frame
from onen.train.runtime import pick_device, seed_everything
from onen.train.student_objective import TeacherTargets, student_objective
from onen.train.tiling import TileGrid, resolve_tiles

if TYPE_CHECKING:
    from onen.train.data.dataset import InspectionDataset

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ data
def _prepare_run(cfg: TrainConfig, run_dir: Path, resume: bool):
    """Index, split (saved once; a resumed run reuses it), and the run's config.json."""
    from onen.train.data.readers import load_index
    from onen.train.data.splits import Splits, stratified_split

    index = load_index(cfg.data, cfg.aoi)
    cfg.class_names = list(index.class_names)
    if len(cfg.class_names) < 2 and cfg.supervision != "none":
        raise OnenError(
            f"{cfg.data}: only the class 'good' was found; --supervision {cfg.supervision} needs defective images "
            "(use --supervision none to train from good images with synthetic defects)"
        )
    splits_path = run_dir / runs.SPLITS
    if resume and splits_path.is_file():
        splits = Splits.load(splits_path, index)
    else:
        splits = stratified_split(index, cfg.test_fraction, cfg.val_fraction, cfg.seed)
        if distributed.is_main():  # every rank draws the same split from the seed; rank 0 writes the run
            splits.save(splits_path, index)
    if not cfg.geometry:
        # only full supervision may measure defects on masks: weak and none train without them
        measured = [s if cfg.supervision == "full" else dataclasses.replace(s, mask=None) for s in splits.train]
        cfg.geometry = resolve_geometry(cfg.size, measured, cfg.patch).to_dict()
        grid, cfg.geometry = resolve_tiles(cfg.tiles, cfg.geometry, cfg.supervision, cfg.patch, cfg.tile_overlap)
        cfg.tile_grid = dataclasses.asdict(grid) if grid is not None else None
    log.info("%s", Geometry(**cfg.geometry).describe())
    if cfg.tile_grid:
        log.info("trained on tiles: %s", TileGrid.from_dict(cfg.tile_grid).describe())
    if distributed.is_main():
        runs.write_json(run_dir / runs.CONFIG, cfg.to_dict())
    return index, splits


def _datasets(cfg: TrainConfig, index, splits, outside_in_mask: bool = False):
    from onen.train.data.dataset import InspectionDataset
    from onen.train.data.synthetic import SyntheticDefects

    train_samples = list(splits.train)
    synthetic = None
    if cfg.supervision == "none":
        train_samples = [s for s in train_samples if s.label == 0]
        if not train_samples:
            raise OnenError(f"{cfg.data}: --supervision none needs good images in the training split; found none")
        synthetic = SyntheticDefects(seed=cfg.seed)
    if cfg.supervision == "weak":
        # image labels only: neither the teacher (CEOD falls back to the AOI) nor the student may see pixel masks
        train_samples = [dataclasses.replace(s, mask=None) for s in train_samples]
    aoi = Path(cfg.aoi) if cfg.aoi else index.aoi
    outside = cfg.outside_marks if cfg.aoi_guidance else 0.0
    options: dict[str, Any] = {
        "aoi": aoi,
        "synthetic": synthetic,
        "synthetic_probability": cfg.synthetic_probability,
        "augment": False,
        "seed": cfg.seed,
        "cache": True,
        "outside_marks": SyntheticDefects(seed=cfg.seed + 3) if outside > 0 else None,
        "outside_probability": outside,
        "outside_in_mask": outside_in_mask,
        "sensor_noise": cfg.sensor_noise,
    }
    grid = cfg.grid()
    if grid is not None:  # the networks train on tiles; validation (val_ds) stays on whole images, tiled by the model
        from onen.train.data.tiles import TiledDataset

        tiled = TiledDataset(train_samples, index.class_names, grid, **options)
        log.info("training on %s: %s", grid.describe(), tiled.counts())
        train_ds: InspectionDataset = tiled
    else:
        train_ds = InspectionDataset(train_samples, index.class_names, cfg.input_height, cfg.input_width, **options)
    val_ds = InspectionDataset(
        list(splits.val), index.class_names, cfg.input_height, cfg.input_width, aoi=aoi, seed=cfg.seed, cache=True
    )
    return train_ds, val_ds


def _good_sets(cfg: TrainConfig, index, train_ds, val_ds):
    """Good training images as they are (no synthetic defects) and the good validation images: what the student's
    good-feature model is fitted and normalised on."""
    from onen.train.data.dataset import InspectionDataset

    grid = cfg.grid()

    def good_only(samples):
        good = [s for s in samples if s.label == 0]
        if grid is not None:  # the good-feature model sits in the student: fitted on what it sees, tiles
            from onen.train.data.tiles import TiledDataset

            return TiledDataset(good, index.class_names, grid, aoi=train_ds.aoi_path, seed=cfg.seed)
        return InspectionDataset(
            good, index.class_names, cfg.input_height, cfg.input_width, aoi=train_ds.aoi_path, seed=cfg.seed
        )

    return good_only(train_ds.samples), good_only(val_ds.samples)


def _loader(dataset, cfg: TrainConfig, shuffle: bool, epoch: int = 0) -> DataLoader:
    """This rank's batches of an epoch (train.distributed.loader: the whole data set in one process)."""
    return distributed.loader(dataset, cfg.batch_size, shuffle, seed=cfg.seed * 1000, epoch=epoch)


# ------------------------------------------------------------------------------------------ teacher
def train_teacher(cfg: TrainConfig, train_ds, val_ds, device: torch.device, run_dir: Path):
    """Fine-tune the EfficientNet-Lite0 teacher (or reload it when a previous run of this dir finished it)."""
    final = run_dir / runs.TEACHER_DIR / runs.TEACHER_FINAL
    if final.is_file():
        log.info("teacher already trained: %s", final)
        return runs.load_teacher(run_dir).to(device)
    from onen.train.teacher_training import TeacherConfig, fit_teacher

    teacher_cfg = TeacherConfig(
        epochs=cfg.teacher_epochs,
        batch_size=cfg.batch_size,
        input_height=cfg.model_height,
        input_width=cfg.model_width,
        seed=cfg.seed,
        freeze_blocks=cfg.teacher_freeze_blocks,
    )
    train_ds.augment = True  # the teacher gets the data set's flips; the student's are in random_flips
    outside_probability, train_ds.outside_probability = (
        train_ds.outside_probability,
        0.0,
    )  # outside marks guide the student
    # with tiles the teacher trains on tiles; its per-epoch figures (a log only) would need whole images tiled, so
    # it is validated once, as a tiled model, after training (the run's summary)
    teacher_val = None if cfg.tile_grid else val_ds
    try:
        teacher = fit_teacher(
            train_ds, teacher_val, len(cfg.class_names), teacher_cfg, device, run_dir / runs.TEACHER_DIR
        )
    finally:
        train_ds.augment = False
        train_ds.outside_probability = outside_probability
    epoch = getattr(teacher, "chosen_epoch", cfg.teacher_epochs)  # the best validated epoch (fit_teacher)
    if distributed.is_main():
        final.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": teacher.state_dict(), "num_classes": len(cfg.class_names), "epoch": epoch}, final)
    distributed.barrier()  # the run's teacher is on disk before any rank reads it
    return teacher.eval()


def teacher_targets(teacher, images: torch.Tensor, need_masks: bool, feature_net=None):
    """Teacher logits + features (no gradients) and, for weak supervision, its Grad-CAM pseudo-masks [N,H,W]
    (train.models.efficientnet_lite.pseudo_masks, from the features computed here). With feature_net the
    distillation features are that network's (the Grad-CAM still reads the teacher's)."""
    from onen.train.models.efficientnet_lite import predicted_defect_cam

    with torch.no_grad():
        features, logits = teacher.forward_features(images)
        cam_source = features
        if feature_net is not None:
            features = feature_net(images)
    size = (images.shape[1], images.shape[2])
    pseudo = predicted_defect_cam(teacher, cam_source, size) if need_masks else None
    return TeacherTargets(logits=logits.detach(), features=features.detach()), pseudo


class TeacherCache:
    """Teacher outputs per image path (float16 on the CPU), so the teacher runs once per real image, not every epoch."""

    def __init__(self, teacher, need_masks: bool, feature_net=None):
        self.teacher = teacher
        self.need_masks = need_masks
        self.feature_net = feature_net
        self.store: dict[str, tuple] = {}

    def get(self, images: torch.Tensor, paths: list[str], cacheable: torch.Tensor):
        missing = [i for i, p in enumerate(paths) if not (bool(cacheable[i]) and p in self.store)]
        if missing:
            index = torch.tensor(missing, device=images.device)
            targets, pseudo = teacher_targets(self.teacher, images[index], self.need_masks, self.feature_net)
            fresh = {
                i: (targets.logits[k], targets.features[k], pseudo[k] if pseudo is not None else None)
                for k, i in enumerate(missing)
            }
            for i, value in fresh.items():
                if bool(cacheable[i]):
                    self.store[paths[i]] = tuple(v.half().cpu() if v is not None else None for v in value)
        rows: list[tuple[Any, ...]] = []
        for i, path in enumerate(paths):
            if i in missing:
                rows.append(fresh[i])
            else:
                rows.append(tuple(v.to(images.device).float() if v is not None else None for v in self.store[path]))
        logits = torch.stack([r[0].float() for r in rows])
        features = torch.stack([r[1].float() for r in rows])
        pseudo = torch.stack([r[2].float() for r in rows]) if self.need_masks else None
        return TeacherTargets(logits=logits, features=features), pseudo


def random_flips(batch: dict, generator: torch.Generator) -> dict:
    """Horizontal/vertical flips per image, applied alike to the image, its targets and the teacher's maps."""
    n = batch["image"].shape[0]
    out = dict(batch)
    for axis_from_end in (1, 2):  # 1: width (last spatial axis), 2: height
        flip = (torch.rand(n, generator=generator) < 0.5).to(batch["image"].device)
        if not flip.any():
            continue
        for key in ("image", "mask", "aoi", "pseudo", "teacher_features"):
            value = out.get(key)
            if value is None:
                continue
            dim = value.dim() - axis_from_end if key != "image" else 3 - axis_from_end
            shape = [n] + [1] * (value.dim() - 1)
            out[key] = torch.where(flip.view(shape), value.flip(dim), value)
    return out


# ------------------------------------------------------------------------------------------ student
def build_run_student(cfg: TrainConfig, teacher_dim: int) -> OneNStudent:
    """The run's student before training (the lite0 stem with its ImageNet weights)."""
    return OneNStudent(OneNConfig.from_train(cfg, teacher_dim), pretrained=cfg.stem == "lite0")


def warmup_cosine(total_steps: int, warmup_fraction: float = 0.05, floor: float = 0.02):
    """LR factor per step: linear warm-up, then cosine down to `floor`. A function of the step and the total
    only, so a resumed run that asks for more epochs simply stretches the tail."""
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * progress))

    return factor


GOOD_FEATURE_KEYS = "good_features."  # fitted after training: not part of a training checkpoint


def _without_good_features(state: dict) -> dict:
    return {k: v for k, v in state.items() if not k.startswith(GOOD_FEATURE_KEYS)}


def _load_training_state(model, state: dict) -> None:
    """A checkpoint's weights; the good-feature model (refitted after training) is neither needed nor kept."""
    missing, unexpected = model.load_state_dict(_without_good_features(state), strict=False)
    missing = [k for k in missing if not k.startswith(GOOD_FEATURE_KEYS)]
    if missing or unexpected:
        raise OnenError(f"the student checkpoint does not fit this student: missing {missing}, unexpected {unexpected}")


def _save_checkpoint(path: Path, model, optimiser, schedule, epoch: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": _without_good_features(model.state_dict()),
            "model_config": model.cfg.to_dict(),
            "optimiser": optimiser.state_dict(),
            "schedule": schedule.state_dict(),
            "epoch": epoch,
            "torch_rng": torch.get_rng_state(),
        },
        tmp,
    )
    tmp.replace(path)


def train_student(
    cfg: TrainConfig,
    train_ds,
    teacher,
    device: torch.device,
    run_dir: Path,
    resume: bool,
    good_sets: tuple[InspectionDataset, InspectionDataset] | None = None,
    val_ds: InspectionDataset | None = None,
) -> tuple[OneNStudent, dict]:
    """Train the student; with val_ds, validate it every epoch (history.csv / history.png) and keep the best epoch's
    weights by validation image AUROC beside the last. Returns the best student (the last when validation cannot
    rank) and which epoch that is. With good_sets (good training images, good held-out images) the good-feature
    model of each saved student is fitted on its own weights (per-epoch validation runs without it)."""
    from onen.train import history, plots

    feature_net, teacher_dim = None, 0
    if teacher is not None:
        teacher_dim = teacher.cfg.head_channels
        if cfg.distils_imagenet_features():
            from onen.train.models.efficientnet_lite import ImageNetFeatures

            feature_net = ImageNetFeatures().to(device)
            teacher_dim = feature_net.channels
    model = build_run_student(cfg, teacher_dim).to(device)
    steps_per_epoch = max(1, (len(train_ds) + cfg.batch_size - 1) // cfg.batch_size)
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, warmup_cosine(cfg.epochs * steps_per_epoch))
    start_epoch = 0
    last = run_dir / runs.CHECKPOINTS / runs.STUDENT_LAST
    best_path = run_dir / runs.CHECKPOINTS / runs.STUDENT_BEST
    history_path = run_dir / runs.HISTORY
    rows: list[dict] = []
    best_rank: tuple[float, float] | None = None
    if resume and last.is_file():
        state = torch.load(last, map_location=device, weights_only=False)
        _load_training_state(model, state["model"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch = state["epoch"] + 1
        rows = [row for row in history.read_history(history_path) if row["epoch"] <= start_epoch]  # continue it
        if best_path.is_file():
            best_rank = tuple(torch.load(best_path, map_location="cpu", weights_only=False)["rank"])
        log.info("resuming the student at epoch %d/%d", start_epoch + 1, cfg.epochs)
    if start_epoch == 0 and distributed.is_main():  # a fresh student: no best epoch yet
        best_path.unlink(missing_ok=True)
    validate = val_ds is not None and len(val_ds) > 0
    if not validate:
        log.warning("no validation images: the student is not validated per epoch; the last epoch is the one used")
    weights = cfg.objective_weights()
    cache = (
        TeacherCache(teacher, need_masks=cfg.supervision == "weak", feature_net=feature_net)
        if teacher is not None
        else None
    )
    flips = torch.Generator().manual_seed(cfg.seed + 7)
    step_model = distributed.replicate(model, device)  # DDP with several ranks; the frozen teacher stays as it is
    for epoch in range(start_epoch, cfg.epochs):
        started = time.monotonic()
        distributed.seed_epoch(cfg.seed + 7, epoch, flips)
        train_ds.set_epoch(epoch)
        model.train()
        losses = history.EpochLosses()
        bar = tqdm(
            _loader(train_ds, cfg, shuffle=True, epoch=epoch),
            desc=f"student {epoch + 1}/{cfg.epochs}",
            unit="batch",
            leave=False,
        )
        for batch in bar:
            batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
            if cache is not None:
                # synthetic images change every epoch, so only real images' teacher outputs are cached
                targets, pseudo = cache.get(batch["image"], batch["path"], cacheable=~batch["synthetic"])
                batch["teacher_features"], batch["pseudo"] = targets.features, pseudo
                batch["teacher_logits"] = targets.logits
            batch = random_flips(batch, flips)
            mask, has_mask = batch["mask"], batch["has_mask"]
            targets = None
            if cache is not None:
                targets = TeacherTargets(logits=batch["teacher_logits"], features=batch["teacher_features"])
            if cfg.supervision == "weak":
                defect = (batch["label"] > 0).float()[:, None, None]
                mask = batch["pseudo"] * batch["aoi"] * defect  # good images keep their known-empty target
                has_mask = torch.ones_like(has_mask)
            out = step_model(batch["image"])
            loss, parts = student_objective(
                out, batch["label"], batch["class_index"], mask, has_mask, batch["aoi"], weights, targets
            )
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimiser.step()
            schedule.step()
            losses.add(loss.item(), parts, len(batch["label"]))
            bar.set_postfix({"loss": f"{loss.item():.3f}", **{k: f"{v:.3f}" for k, v in parts.items()}})
        distributed.average_buffers(model)
        figures = history.validation_figures(None)
        if validate:
            with history.training_streams_kept(device):
                figures = history.validation_figures(
                    predict_dataset(whole_frame(model, cfg.tile_grid), val_ds, cfg.batch_size, device)
                )
        if history.is_better(figures, best_rank):
            best_rank = history.rank(figures)
            if distributed.is_main():
                _save_best(best_path, model, epoch, figures)
        rows.append(
            {
                "epoch": epoch + 1,
                **losses.means(),
                **figures,
                "lr": optimiser.param_groups[0]["lr"],
                "seconds": time.monotonic() - started,
            }
        )
        if distributed.is_main():
            history.write_history(history_path, rows)
        log.info(
            "student epoch %d/%d: loss %.4f, validation image AUROC %s, pixel AUROC %s",
            epoch + 1,
            cfg.epochs,
            rows[-1]["loss"],
            _figure(figures["val_image_auroc"]),
            _figure(figures["val_pixel_auroc"]),
        )
        if distributed.is_main():
            _save_checkpoint(last, model, optimiser, schedule, epoch)
        distributed.barrier()  # the epoch's files are written before any rank reads them or the job stops
    model.eval()
    chosen = _chosen_epoch(best_path, rows, cfg.epochs, validate)
    if rows and distributed.is_main():
        plots.history_plot(run_dir / runs.HISTORY_PLOT, rows, chosen["epoch"] if chosen["selected_by"] else None)
    best = model
    if chosen["epoch"] != cfg.epochs:
        best = copy.deepcopy(model)
        _load_training_state(best, torch.load(best_path, map_location=device, weights_only=False)["model"])
        best.eval()
    for student in dict.fromkeys((model, best)):  # the last epoch's, then the best one's when it is another
        if student.good_features is not None:
            from onen.train.good_feature_fit import fit_good_features

            if good_sets is None:
                raise OnenError("the student carries a good-feature model but no good images were given to fit it")
            fitted = fit_good_features(student, *good_sets, cfg.batch_size, device)
            if student is best and distributed.is_main():
                runs.write_json(run_dir / runs.GOOD_FEATURES, fitted)
    for student, name in ((model, runs.STUDENT), (best, runs.STUDENT_BEST)):
        if distributed.is_main():
            torch.save({"model": student.state_dict(), "model_config": student.cfg.to_dict()}, run_dir / name)
    return best, chosen


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _save_best(path: Path, model, epoch: int, figures: dict) -> None:
    """The best epoch's weights so far (no optimiser: nothing resumes from it) and the figure that made it best."""
    from onen.train import history

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    state = {
        "model": _without_good_features(model.state_dict()),
        "epoch": epoch,
        "figures": figures,
        "rank": history.rank(figures),
    }
    torch.save(state, tmp)
    tmp.replace(path)


def _chosen_epoch(best_path: Path, rows: list[dict], epochs: int, validated: bool) -> dict:
    """Which epoch's student is the run's (1-based) and why: summary.json's `student_checkpoint`."""
    from onen.train.history import SELECTED_BY, TIE_BREAK

    if best_path.is_file():
        state = torch.load(best_path, map_location="cpu", weights_only=False)
        return {
            "file": runs.STUDENT_BEST,
            "epoch": int(state["epoch"]) + 1,
            "epochs": epochs,
            "selected_by": SELECTED_BY,
            "tie_break": TIE_BREAK,
            "value": state["figures"][SELECTED_BY],
            "figures": state["figures"],
        }
    if not validated:
        reason = "no validation images"
    elif not rows:
        reason = "no epoch of this run was validated (it was trained before per-epoch validation)"
    else:
        reason = "validation image AUROC undefined every epoch (validation needs good and defective images)"
    log.warning("the run's student is the last epoch's: %s", reason)
    return {"file": runs.STUDENT_BEST, "epoch": epochs, "epochs": epochs, "selected_by": None, "reason": reason}


# ------------------------------------------------------------------------------------------ validation
def predict_dataset(model, dataset, batch_size: int, device: torch.device):
    """Bundle outputs (score, map, logits) + labels, masks, has_mask, aoi of a dataset, as numpy (in a job of several
    ranks: each predicts its shard, every rank gets the whole, train.distributed.sharded)."""
    return distributed.sharded(_predict_dataset, model, dataset, batch_size, device)


@torch.no_grad()
def _predict_dataset(model, dataset, batch_size: int, device: torch.device):
    from onen.train.export import _ThreeOutputs

    wrapper = _ThreeOutputs(model).eval().to(device)
    scores, maps, logits, labels, masks, has_masks, classes = [], [], [], [], [], [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0):
        score, anomaly_map, class_logits = wrapper(batch["image"].to(device))
        scores.append(score.cpu().numpy())
        maps.append(anomaly_map.cpu().numpy())
        logits.append(class_logits.cpu().numpy())
        labels.append(batch["label"].numpy())
        masks.append(batch["mask"].numpy())
        has_masks.append(batch["has_mask"].numpy())
        classes.append(batch["class_index"].numpy())
    if not scores:
        return None
    cat = np.concatenate
    return {
        "score": cat(scores),
        "map": cat(maps),
        "logits": cat(logits),
        "label": cat(labels),
        "mask": cat(masks),
        "has_mask": cat(has_masks),
        "class_index": cat(classes),
    }


def validation_summary(outputs: dict | None, min_region_area: int = 16, model: str = "student") -> dict:
    """Validation figures and thresholds of one model: chosen on its good validation images (threshold_source
    "validation"), or, when validation has no good image, the stated fallbacks (threshold_source "default") with a
    WARNING and the reason. class_accuracy is None unless the model tells two or more defect classes apart."""
    from onen.train import history
    from onen.train.export import default_thresholds
    from onen.train.metrics import class_accuracy

    good = outputs["label"] == 0 if outputs is not None else np.zeros(0, bool)
    if not good.any():
        reason = (
            "the validation split is empty"
            if outputs is None
            else f"the validation split has no good image ({len(good)} defective)"
        )
        thresholds, normalisation = default_thresholds(np.array([]), min_region_area=min_region_area)
        log.warning(
            "%s: %s, so no threshold could be chosen on validation; its thresholds are the stated fallbacks "
            "(image %s, pixel %s, threshold_source 'default'): calibrate each camera before trusting its verdicts",
            model,
            reason,
            thresholds.image,
            thresholds.pixel,
        )
        return {
            "validation": history.validation_figures(outputs),
            "thresholds": asdict(thresholds),
            "threshold_source": thresholds.source,
            "threshold_fallback_reason": reason,
            "score_normalisation": asdict(normalisation),
        }
    assert outputs is not None
    defect_with_mask = (outputs["label"] == 1) & outputs["has_mask"]
    defect_pixels = outputs["map"][defect_with_mask][:, 0][outputs["mask"][defect_with_mask] > 0.5]
    thresholds, normalisation = default_thresholds(
        outputs["score"][good],
        outputs["map"][good],
        outputs["score"][~good],
        defect_pixels,
        min_region_area=min_region_area,
    )
    figures = history.validation_figures(outputs)
    validation: dict[str, Any] = {
        "images": figures["val_images"],
        "image_auroc": figures["val_image_auroc"],
        "pixel_auroc": figures["val_pixel_auroc"],
        "class_accuracy": None,
        "defect_class_accuracy": None,
    }
    known = outputs["class_index"] >= 0
    if outputs["logits"].shape[1] > 2 and known.any():  # two or more defect classes: which one is a question
        validation["class_accuracy"] = float(
            (outputs["logits"][known].argmax(1) == outputs["class_index"][known]).mean()
        )
        # the test report's measure (train.metrics.class_accuracy): which defect, over defective images only
        validation["defect_class_accuracy"] = class_accuracy(outputs["class_index"], outputs["logits"])
    return {
        "validation": validation,
        "thresholds": asdict(thresholds),
        "threshold_source": thresholds.source,
        "score_normalisation": asdict(normalisation),
    }


# ------------------------------------------------------------------------------------------ entry
def train(cfg: TrainConfig, resume: bool = False) -> Path:
    """Run a whole training (teacher then student) into cfg.out and return the run dir. With cfg.nproc > 1 outside a
    launched job, it starts that many ranks (train.distributed.launch), each running this again."""
    if distributed.should_launch(cfg.nproc):
        cfg.check()
        return distributed.launch(cfg.nproc, train, cfg, resume)
    with torch.enable_grad(), distributed.session(pick_device(cfg.device)):  # grad: whatever a caller switched off
        return _train(cfg, resume)


def _train(cfg: TrainConfig, resume: bool) -> Path:
    from onen.train import history, teacher_training

    cfg.check()
    run_dir = Path(cfg.out)
    if run_dir.exists() and (run_dir / runs.CONFIG).is_file() and not resume:
        raise OnenError(f"{run_dir}: already holds a run; use --resume to continue it or choose another --out")
    if resume and (run_dir / runs.CONFIG).is_file():
        saved = TrainConfig.from_dict(runs.read_config(run_dir), str(run_dir / runs.CONFIG))
        saved.epochs = cfg.epochs if cfg.epochs_given else saved.epochs
        saved.out = cfg.out
        cfg = saved
    distributed.barrier()  # every rank has looked at the run dir before rank 0 writes into it
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    device = distributed.rank_device(pick_device(cfg.device))
    timings: dict[str, float] = {}
    index, splits = _prepare_run(cfg, run_dir, resume)
    if cfg.family == "grdnet":
        from onen.train.grdnet_training import train_grdnet

        return train_grdnet(cfg, index, splits, device, run_dir, resume)
    train_ds, val_ds = _datasets(cfg, index, splits)
    log.info(
        "data %s: %d train / %d val / %d test images, classes %s, device %s",
        cfg.data,
        len(splits.train),
        len(splits.val),
        len(splits.test),
        cfg.class_names,
        device,
    )
    teacher = None
    started = time.monotonic()
    if len(cfg.class_names) < 2 and cfg.teacher_epochs > 0:
        log.info(
            "only good images: no teacher (a classifier needs a defect class); the student trains without distillation"
        )
    if cfg.teacher_epochs > 0 and len(cfg.class_names) >= 2:
        teacher = train_teacher(cfg, train_ds, val_ds, device, run_dir)
        teacher.eval()
        for parameter in teacher.parameters():
            parameter.requires_grad_(False)
    timings["teacher"] = max(time.monotonic() - started, teacher_training.seconds_spent(run_dir / runs.TEACHER_DIR))
    started = time.monotonic()
    seed_everything(cfg.seed + 1)
    good_sets = _good_sets(cfg, index, train_ds, val_ds) if cfg.uses_good_features() else None
    student, chosen = train_student(cfg, train_ds, teacher, device, run_dir, resume, good_sets, val_ds)
    timings["student"] = max(time.monotonic() - started, history.seconds_spent(run_dir / runs.HISTORY))  # with --resume
    summary: dict[str, Any] = {
        # the figures and thresholds of the student export and eval use (runs.STUDENT_BEST), and which epoch it is
        "student": validation_summary(
            predict_dataset(whole_frame(student, cfg.tile_grid), val_ds, cfg.batch_size, device), model="student"
        ),
        "student_checkpoint": chosen,
        "splits": splits.counts() | {"val_carved_from_train": splits.meta.get("val_carved_from_train")},
    }
    if teacher is not None:
        from onen.train.models.efficientnet_lite import TeacherExport

        summary["teacher"] = validation_summary(
            predict_dataset(whole_frame(TeacherExport(teacher).eval(), cfg.tile_grid), val_ds, cfg.batch_size, device),
            model="teacher",
        )
        saved = torch.load(run_dir / runs.TEACHER_DIR / runs.TEACHER_FINAL, map_location="cpu", weights_only=False)
        summary["teacher_checkpoint"] = {"epoch": saved.get("epoch"), "epochs": cfg.teacher_epochs}
    from onen.train.data.tiles import TiledDataset

    if isinstance(train_ds, TiledDataset):
        summary["tiles"] = {**train_ds.grid.as_manifest(), **train_ds.counts()}
    return write_summary(run_dir, summary, timings, "student", chosen)


def write_summary(run_dir: Path, summary: dict, timings: dict[str, float], model_key: str, chosen: dict) -> Path:
    """summary.json of a finished run (timings totalled) and the one line that says what the run kept."""
    summary["timings_s"] = {**timings, "total": sum(timings.values())}
    if distributed.is_main():
        runs.write_json(run_dir / runs.SUMMARY, summary)
    log.info(
        "run written to %s (%s of epoch %d/%d, validation %s, threshold_source %s)",
        run_dir,
        model_key,
        chosen["epoch"],
        chosen["epochs"],
        summary[model_key]["validation"],
        summary[model_key]["threshold_source"],
    )
    return run_dir
