"""`small_bundle`: a real, small OneN bundle in well under a minute on a CPU, for the tests of other parts (a real
trained and exported bundle, not a mock) and `onen demo`.

It is `onen train` with the tiny recipe train/recipe_files/small.yaml on the procedural set of train.tiny_data
(64 px), then `onen export` of that run: the real trainer and exporter, on one torch thread so the model does not
depend on the machine's thread count. Deterministic for a seed on a given machine, hence cached.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from pathlib import Path

from onen.edge import images

log = logging.getLogger(__name__)

SMALL_SIZE = 64  # the recipe's input and train.tiny_data's parts
SMALL_RECIPE = "small"  # train/recipe_files/small.yaml
SMALL_IMAGES = 128  # generated parts the run splits into training and validation
TRAIN_THREADS = 1  # torch's float reductions depend on the thread count: fixed, so every machine trains the same model
CACHE_ENV = "ONEN_SMALL_BUNDLE_CACHE"  # a folder; "off" disables the cache
BUNDLE, SAMPLES, RUN, TRAINING_SET = "bundle", "data", "run", "train-set"  # what out_dir holds


def small_bundle_key(seed: int = 0) -> str:
    """Names the small bundle by everything that makes it (seed, torch, threads, the training code and recipes):
    any change retrains."""
    import torch

    digest = hashlib.sha256(f"{seed}:{SMALL_IMAGES}:{torch.__version__}:{TRAIN_THREADS}".encode())
    here = Path(__file__).resolve().parent
    for path in sorted([*here.rglob("*.py"), *here.glob("recipe_files/*.yaml")]):
        digest.update(str(path.relative_to(here)).encode() + path.read_bytes())
    digest.update(Path(images.__file__).read_bytes())  # the resize the bundle is trained and served with
    return digest.hexdigest()[:16]


def _cache_dir(seed: int) -> Path | None:
    """Where a finished small bundle is kept, under its key."""
    setting = os.environ.get(CACHE_ENV, str(Path.home() / ".cache" / "onen-inspect" / "small_bundle"))
    if setting.lower() == "off":
        return None
    return Path(setting) / small_bundle_key(seed)


def small_bundle(out_dir: str | Path, seed: int = 0) -> Path:
    """A small real bundle in out_dir/bundle (+ sample images in out_dir/data); returns the bundle dir.

    Trained once per code version and seed, then copied from a cache (ONEN_SMALL_BUNDLE_CACHE, default
    ~/.cache/onen-inspect/small_bundle; "off" disables it): training is deterministic, so the copy is what
    training again would give, and test sessions of every part stay fast.
    """
    out_dir = Path(out_dir)
    cache = _cache_dir(seed)
    if cache is not None and (cache / BUNDLE / "manifest.json").is_file():
        shutil.copytree(cache, out_dir, dirs_exist_ok=True)
        log.info("small bundle copied from the cache %s", cache)
        return out_dir / BUNDLE
    bundle = train_small_bundle(out_dir, seed)
    if cache is not None:
        staging = cache.with_name(cache.name + f".tmp{os.getpid()}")
        try:
            shutil.copytree(out_dir, staging, dirs_exist_ok=True)
            staging.replace(cache) if not cache.exists() else shutil.rmtree(staging)
        except OSError as error:  # a read-only home must not fail the recipe
            log.warning("could not cache the small bundle in %s: %s", cache, error)
    return bundle


def train_small_bundle(out_dir: str | Path, seed: int = 0) -> Path:
    """Train the small run on generated parts on TRAIN_THREADS torch threads and export it to out_dir/bundle."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    try:
        return _train_small_bundle(Path(out_dir), seed)
    finally:
        torch.set_num_threads(threads)


def _train_small_bundle(out_dir: Path, seed: int) -> Path:
    from onen.train.config_file import build_config, load_recipe, shipped_recipes
    from onen.train.export import export_run
    from onen.train.tiny_data import write_tiny_dataset
    from onen.train.trainer import train

    started = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    write_tiny_dataset(out_dir / SAMPLES, seed=seed + 2000, count=24, size=SMALL_SIZE)  # for demos and calibration
    manifest = write_tiny_dataset(out_dir / TRAINING_SET, seed=seed, count=SMALL_IMAGES, size=SMALL_SIZE)
    shutil.rmtree(out_dir / RUN, ignore_errors=True)  # a run left by an interrupted attempt: train it afresh
    settings = load_recipe(shipped_recipes()[SMALL_RECIPE])
    cfg = build_config({**settings, "data": str(manifest), "out": str(out_dir / RUN), "seed": seed})
    run_dir = train(cfg)
    bundle = export_run(run_dir, out_dir / BUNDLE, name="small-demo", force=True)  # out_dir is this recipe's own
    log.info("small bundle in %.1f s", time.monotonic() - started)
    return bundle
