"""Ready-made training recipes. `small_bundle`: a real, small OneN bundle in well under a minute on a CPU.

Used by the tests of other parts (a real trained + exported bundle, not a mock) and by `onen demo`.
It trains the student with full supervision on the tiny procedural set of train.tiny_data (64x64),
in memory, with the same objective as `onen train`, then exports it through train.export (which checks
ONNX Runtime against torch). Deterministic for a seed on a given machine.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SMALL_SIZE = 64
SMALL_STEPS = 150
TRAIN_THREADS = 1  # torch's float reductions depend on the thread count: fixed, so every machine trains the same model
CACHE_ENV = "ONEN_SMALL_BUNDLE_CACHE"  # a folder; "off" disables the cache
_SOURCES = (
    "recipes.py",
    "tiny_data.py",
    "export.py",
    "losses.py",
    "student_objective.py",
    "models/onen_vit.py",
    "models/input_layer.py",
)
SMALL_BATCH = 16


def _small_student(num_classes: int):
    from onen.train.models.onen_vit import OneNConfig, OneNStudent

    # fine_map off and the objective below: the small model other parts' tests were written against stays the same
    cfg = OneNConfig(
        num_classes=num_classes,
        input_height=SMALL_SIZE,
        input_width=SMALL_SIZE,
        patch=8,
        dim=48,
        depth=2,
        heads=2,
        mlp_ratio=2.0,
        stem="conv",
        stem_channels=16,
        fine_map=False,
    )
    return OneNStudent(cfg)


def small_bundle_key(seed: int = 0, steps: int = SMALL_STEPS) -> str:
    """Names the small bundle by everything that makes it (seed, steps, torch, threads, the code): any change
    retrains."""
    import hashlib

    import torch

    digest = hashlib.sha256(f"{seed}:{steps}:{torch.__version__}:{TRAIN_THREADS}".encode())
    here = Path(__file__).resolve().parent
    for name in _SOURCES:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:16]


def _cache_dir(seed: int, steps: int) -> Path | None:
    """Where a finished small bundle is kept, under its key."""
    import os

    setting = os.environ.get(CACHE_ENV, str(Path.home() / ".cache" / "onen-inspect" / "small_bundle"))
    if setting.lower() == "off":
        return None
    return Path(setting) / small_bundle_key(seed, steps)


def small_bundle(out_dir: str | Path, seed: int = 0, steps: int = SMALL_STEPS) -> Path:
    """A small real bundle in out_dir/bundle (+ sample images in out_dir/data); returns the bundle dir.

    Trained once per code version and seed, then copied from a cache (ONEN_SMALL_BUNDLE_CACHE, default
    ~/.cache/onen-inspect/small_bundle; "off" disables it): training is deterministic, so the copy is what
    training again would give, and test sessions of every part stay fast.
    """
    import shutil

    out_dir = Path(out_dir)
    cache = _cache_dir(seed, steps)
    if cache is not None and (cache / "bundle" / "manifest.json").is_file():
        shutil.copytree(cache, out_dir, dirs_exist_ok=True)
        log.info("small bundle copied from the cache %s", cache)
        return out_dir / "bundle"
    bundle = train_small_bundle(out_dir, seed, steps)
    if cache is not None:
        staging = cache.with_name(cache.name + f".tmp{os.getpid()}")
        try:
            shutil.copytree(out_dir, staging, dirs_exist_ok=True)
            staging.replace(cache) if not cache.exists() else shutil.rmtree(staging)
        except OSError as error:  # a read-only home must not fail the recipe
            log.warning("could not cache the small bundle in %s: %s", cache, error)
    return bundle


def train_small_bundle(out_dir: str | Path, seed: int = 0, steps: int = SMALL_STEPS) -> Path:
    """Train a small student on generated data on TRAIN_THREADS torch threads, export it to out_dir/bundle."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    try:
        return _train_small_bundle(out_dir, seed, steps)
    finally:
        torch.set_num_threads(threads)


def _train_small_bundle(out_dir: str | Path, seed: int, steps: int) -> Path:
    import torch

    from onen.train.export import ExportInfo, default_thresholds, export_model, torch_outputs
    from onen.train.student_objective import ObjectiveWeights, student_objective
    from onen.train.tiny_data import make_tiny_set, write_tiny_dataset

    started = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    np.random.seed(seed)
    data = make_tiny_set(seed=seed, count=96, size=SMALL_SIZE)
    val = make_tiny_set(seed=seed + 1000, count=32, size=SMALL_SIZE)
    write_tiny_dataset(
        out_dir / "data", seed=seed + 2000, count=24, size=SMALL_SIZE
    )  # sample images for demos/calibration
    images = torch.from_numpy(data.images)
    masks = torch.from_numpy(data.masks).float()
    labels = torch.from_numpy(data.labels)
    classes = torch.from_numpy(data.classes)
    aoi = torch.from_numpy(data.aoi).float().expand(len(images), -1, -1)
    model = _small_student(len(data.class_names))
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    weights = ObjectiveWeights(
        aoi_guidance=True,
        balanced_maps=True,
        balanced_layers=None,
        defect_class=1.0,
        kd_defect=0.0,
        kd_score=0.0,
        aoi_peak=1.0,
    )
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        index = torch.randint(0, len(images), (SMALL_BATCH,), generator=generator)
        batch = images[index]
        flip = torch.rand(SMALL_BATCH, generator=generator) < 0.5
        batch = torch.where(flip[:, None, None, None], batch.flip(2), batch)
        mask = torch.where(flip[:, None, None], masks[index].flip(2), masks[index])
        out = model(batch)
        loss, _ = student_objective(out, labels[index], classes[index], mask, labels[index] > 0, aoi[index], weights)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    model.eval()
    scores, maps, _ = torch_outputs(model, val.images)
    good = val.labels == 0
    defect_pixels = maps[~good][:, 0][val.masks[~good]]
    thresholds, normalisation = default_thresholds(
        scores[good], maps[good], scores[~good], defect_pixels, min_region_area=4
    )
    from onen.train.metrics import image_auroc

    auroc = image_auroc(val.labels, scores)
    info = ExportInfo(
        name="small-demo",
        class_names=list(data.class_names),
        input_height=SMALL_SIZE,
        input_width=SMALL_SIZE,
        training={
            "recipe": "small_bundle",
            "seed": seed,
            "steps": steps,
            "supervision": "full",
            "data": "onen.train.tiny_data",
            "images": int(len(images)),
            "per_class": {n: int((data.classes == i).sum()) for i, n in enumerate(data.class_names)},
            "config": model.cfg.to_dict(),
        },
        metrics={"val_image_auroc": auroc, "val_images": int(len(val.images))},
        thresholds=thresholds,
        score_normalisation=normalisation,
    )
    reference = np.concatenate([val.images[good][:2], val.images[~good][:2]])
    bundle = export_model(model, info, out_dir / "bundle", reference, force=True)  # out_dir is this recipe's own cache
    log.info("small bundle in %.1f s, val image AUROC %.3f", time.monotonic() - started, auroc)
    return bundle
