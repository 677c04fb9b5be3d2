"""`onen train --family grdnet`: GRD-Net (seed 002) from good images with synthetic defects.

The OneN trainer's preparation is shared (train.trainer: data, splits, input geometry, synthetic Perlin defects inside
the AOI and marks outside it, the loader's seeds); so are per-epoch validation through the bundle model, the best
checkpoint by validation image AUROC, history.csv / history.png (train.history) and the thresholds of summary.json
(train.trainer.validation_summary). Only the networks and their step are GRD-Net's (train.grdnet_step). Validation
uses the real defects of the validation split, or, when it has none, synthetic defects on its good images (fixed,
the same every epoch). Every epoch also logs the discriminator's loss and mean outputs, flags "the discriminator
won" (train.grdnet_step.discriminator_won), and the reconstruction loss on good validation images.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from onen.train import distributed, runs
from onen.train.config import GRDNetRecipe
from onen.train.grdnet_step import (
    BATCH_KEYS,
    GRDNetNets,
    GRDNetOptimisers,
    discriminator_won,
    grdnet_step,
)
from onen.train.losses_grdnet import GRDNetWeights, contextual_loss
from onen.train.models.grdnet_export import GRDNetExport
from onen.train.models.grdnet_generator import unit_images

log = logging.getLogger(__name__)
NETWORKS = ("generator", "discriminator", "unet")  # GRDNetNets' and GRDNetOptimisers' fields
VALIDATION_SEED_OFFSET = 5  # the synthetic validation defects' seed: cfg.seed + this (train's are cfg.seed)


class WithCleanTarget(Dataset):
    """A training InspectionDataset's items plus "target": the same image as read, before any synthetic mark."""

    def __init__(self, dataset):
        if dataset.augment:
            raise ValueError("GRD-Net's target is the image as read: its training set must not flip images")
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict:
        item = self.dataset[index]
        clean, _, _ = self.dataset.load_resized(index)
        item["target"] = torch.from_numpy(np.ascontiguousarray(clean, dtype=np.uint8))
        return item


def validation_set(cfg, index, val_ds):
    """(dataset, "real" | "synthetic"): the validation split as it is when it holds good and defective images,
    else its good images with fixed synthetic defects (the same every epoch), so the image AUROC can rank epochs."""
    from onen.train.data.dataset import InspectionDataset
    from onen.train.data.synthetic import SyntheticDefects

    labels = {sample.label for sample in val_ds.samples}
    if labels >= {0, 1} or 0 not in labels:
        return val_ds, "real"
    seed = cfg.seed + VALIDATION_SEED_OFFSET
    synthetic = InspectionDataset(
        list(val_ds.samples),
        index.class_names,
        cfg.input_height,
        cfg.input_width,
        aoi=val_ds.aoi_path,
        synthetic=SyntheticDefects(seed=seed),
        synthetic_probability=cfg.synthetic_probability,
        seed=seed,
        cache=True,
    )
    return synthetic, "synthetic"


@torch.no_grad()
def good_reconstruction_loss(generator, dataset, weights: GRDNetWeights, batch_size: int, device) -> float | None:
    """Mean contextual loss (L1 + 1 - SSIM) between good validation images and their reconstructions."""
    generator.eval()
    total, count = 0.0, 0
    for batch in DataLoader(distributed.shard(dataset), batch_size=batch_size, shuffle=False, num_workers=0):
        good = batch["label"] == 0
        if not good.any():
            continue
        x = unit_images(batch["image"][good].to(device))
        value = contextual_loss(x, generator.reconstruct(x), weights)["contextual"]
        total += float(value) * int(good.sum())
        count += int(good.sum())
    total, images = distributed.all_sum(total, count)  # over the ranks' shards
    return total / images if images else None


def _nets_state(nets: GRDNetNets) -> dict:
    return {name: getattr(nets, name).state_dict() for name in NETWORKS}


def _save(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _model_file(nets: GRDNetNets, recipe: GRDNetRecipe, num_classes: int) -> dict:
    """What runs.load_grdnet reads: the exported networks (generator, U-Net) and their config."""
    return {
        "generator": nets.generator.state_dict(),
        "unet": nets.unet.state_dict(),
        "model_config": recipe.model.to_dict(),
        "num_classes": num_classes,
    }


def train_grdnet(cfg, index, splits, device: torch.device, run_dir: Path, resume: bool) -> Path:
    """Train GRD-Net into run_dir after train.trainer's shared preparation; returns run_dir."""
    from onen.train import history, plots
    from onen.train.trainer import (
        _chosen_epoch,
        _datasets,
        _figure,
        _loader,
        predict_dataset,
        validation_summary,
        write_summary,
    )

    recipe = GRDNetRecipe.from_dict(cfg.grdnet)
    recipe.model = dataclasses.replace(recipe.model, input_height=cfg.model_height, input_width=cfg.model_width)
    recipe.model.check()
    cfg.grdnet = recipe.to_dict()
    if distributed.is_main():
        runs.write_json(run_dir / runs.CONFIG, cfg.to_dict())  # with the networks' resolved input size
    num_classes = len(cfg.class_names)
    train_ds, val_ds = _datasets(cfg, index, splits, outside_in_mask=True)  # every mark in the mask: the ROI decides
    items = WithCleanTarget(train_ds)
    val_ds, val_kind = validation_set(cfg, index, val_ds)
    log.info(
        "GRD-Net on %s: %d good training images, %d validation images (%s defects), device %s",
        cfg.data,
        len(items),
        len(val_ds),
        val_kind,
        device,
    )
    started_all = time.monotonic()
    nets = GRDNetNets.build(recipe.model)
    for net in (nets.generator, nets.discriminator, nets.unet):
        net.to(device)
    optimisers = GRDNetOptimisers.build(nets, recipe.optimiser)
    checkpoints = run_dir / runs.CHECKPOINTS
    last, best_path = checkpoints / runs.GRDNET_LAST, checkpoints / runs.GRDNET_BEST
    history_path = run_dir / runs.HISTORY
    rows: list[dict] = []
    best_rank: tuple[float, float] | None = None
    start_epoch = 0
    if resume and last.is_file():
        state = torch.load(last, map_location=device, weights_only=False)
        for name in NETWORKS:
            getattr(nets, name).load_state_dict(state["nets"][name])
            getattr(optimisers, name).load_state_dict(state["optimisers"][name])
        torch.set_rng_state(state["torch_rng"])
        start_epoch = int(state["epoch"]) + 1
        rows = [row for row in history.read_history(history_path) if row["epoch"] <= start_epoch]
        if best_path.is_file():
            best_rank = tuple(torch.load(best_path, map_location="cpu", weights_only=False)["rank"])
        log.info("resuming GRD-Net at epoch %d/%d", start_epoch + 1, cfg.epochs)
    if start_epoch == 0 and distributed.is_main():
        best_path.unlink(missing_ok=True)
    validate = len(val_ds) > 0
    if not validate:
        log.warning("no validation images: GRD-Net is not validated per epoch; the last epoch is the one used")
    exported = GRDNetExport(nets.generator, nets.unet, num_classes)  # shares the networks being trained
    # several ranks: each network in its own DDP (GRD-Net steps them one after the other, each with its optimiser)
    step_nets = GRDNetNets(*(distributed.replicate(getattr(nets, name), device) for name in NETWORKS))
    for epoch in range(start_epoch, cfg.epochs):
        started = time.monotonic()
        distributed.seed_epoch(cfg.seed, epoch)
        items.set_epoch(epoch)
        losses = history.EpochLosses()
        d_outputs = {"d_real": 0.0, "d_fake": 0.0}
        loader = _loader(items, cfg, shuffle=True, epoch=epoch)
        bar = tqdm(loader, desc=f"grdnet {epoch + 1}/{cfg.epochs}", unit="batch", leave=False)
        for batch in bar:
            batch = {key: batch[key].to(device) for key in BATCH_KEYS}
            logs = grdnet_step(step_nets, optimisers, batch, recipe.weights)
            size = len(batch["image"])
            parts = {"d": logs["d_loss"], **{k: v for k, v in logs.items() if k[:2] in ("g_", "u_") and k != "g_total"}}
            losses.add(logs["d_loss"] + logs["g_total"] + logs["u_focal"], parts, size)
            for key in d_outputs:
                d_outputs[key] += logs[key] * size
            bar.set_postfix(d=f"{logs['d_loss']:.3f}", g=f"{logs['g_total']:.3f}", u=f"{logs['u_focal']:.3f}")
        d_outputs = {key: value / max(1, losses.images) for key, value in d_outputs.items()}
        distributed.average_buffers(nets.generator, nets.discriminator, nets.unet)
        won = discriminator_won(d_outputs["d_real"], d_outputs["d_fake"])
        figures = history.validation_figures(None)
        recon = None
        if validate:
            with history.training_streams_kept(device):
                figures = history.validation_figures(predict_dataset(exported, val_ds, cfg.batch_size, device))
                recon = good_reconstruction_loss(nets.generator, val_ds, recipe.weights, cfg.batch_size, device)
        if history.is_better(figures, best_rank):
            best_rank = history.rank(figures)
            if distributed.is_main():
                _save(
                    best_path,
                    {**_model_file(nets, recipe, num_classes), "epoch": epoch, "figures": figures, "rank": best_rank},
                )
        rows.append(
            {
                "epoch": epoch + 1,
                **losses.means(),
                **d_outputs,
                "d_won": int(won),
                "val_recon_loss": recon,
                **figures,
                "lr": optimisers.generator.param_groups[0]["lr"],
                "seconds": time.monotonic() - started,
            }
        )
        if distributed.is_main():
            history.write_history(history_path, rows)
        if won:
            log.warning(
                "GRD-Net epoch %d: the discriminator won (mean output %.3f on real, %.3f on reconstructions): the "
                "generator learns little from the adversarial term",
                epoch + 1,
                d_outputs["d_real"],
                d_outputs["d_fake"],
            )
        log.info(
            "GRD-Net epoch %d/%d: loss %.4f, D real/fake %.3f/%.3f, good val reconstruction %s, validation image "
            "AUROC %s, pixel AUROC %s",
            epoch + 1,
            cfg.epochs,
            rows[-1]["loss"],
            d_outputs["d_real"],
            d_outputs["d_fake"],
            _figure(recon),
            _figure(figures["val_image_auroc"]),
            _figure(figures["val_pixel_auroc"]),
        )
        if distributed.is_main():
            _save(
                last,
                {
                    "nets": _nets_state(nets),
                    "optimisers": {name: getattr(optimisers, name).state_dict() for name in NETWORKS},
                    "epoch": epoch,
                    "torch_rng": torch.get_rng_state(),
                },
            )
        distributed.barrier()  # the epoch's files are written before any rank reads them or the job stops
    training_seconds = max(time.monotonic() - started_all, history.seconds_spent(history_path))  # with --resume
    chosen = {**_chosen_epoch(best_path, rows, cfg.epochs, validate), "file": runs.GRDNET_BEST}
    if distributed.is_main():
        if rows:
            marked = chosen["epoch"] if chosen.get("selected_by") else None
            plots.history_plot(run_dir / runs.HISTORY_PLOT, rows, marked)
        _save(run_dir / runs.GRDNET, _model_file(nets, recipe, num_classes))
        best_file = _model_file(nets, recipe, num_classes)
        if best_path.is_file() and chosen["epoch"] != cfg.epochs:
            best_state = torch.load(best_path, map_location="cpu", weights_only=False)
            best_file = {key: best_state[key] for key in best_file}
        _save(run_dir / runs.GRDNET_BEST, best_file)
    distributed.barrier()  # every rank reads the run's GRD-Net back
    started = time.monotonic()
    model = runs.load_grdnet(run_dir).to(device)
    own = validation_summary(predict_dataset(model, val_ds, cfg.batch_size, device), model="GRD-Net")
    for key in ("class_accuracy", "defect_class_accuracy"):  # its class logits are the score's (no class head)
        if key in own["validation"]:
            own["validation"][key] = None
    summary: dict[str, Any] = {
        "grdnet": own,
        "grdnet_checkpoint": chosen,
        "validation_defects": val_kind,
        "discriminator_won_epochs": [row["epoch"] for row in rows if row.get("d_won")],
        "splits": splits.counts() | {"val_carved_from_train": splits.meta.get("val_carved_from_train")},
    }
    timings = {"grdnet": training_seconds, "summary": time.monotonic() - started}
    return write_summary(run_dir, summary, timings, "grdnet", chosen)
