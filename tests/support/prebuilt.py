"""Fixtures that need the training layer (torch) to make, for tests that must run without it.

In the full venv each is made on demand (the small bundle through train.recipes and its cache). The station
venv has no torch: there `ONEN_TEST_FIXTURES` names a folder that `python -m tests.support.build_fixtures DIR`
wrote in the full venv, and the same fixtures are read from it as files.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FIXTURES_ENV = "ONEN_TEST_FIXTURES"
BUNDLE_SEEDS = {"tiny_bundle": 0, "second_bundle": 1}  # small_bundle's seed of each bundle fixture
TINY_SETS = ((11, 300), (12, 80), (13, 800), (31, 240))  # (seed, count) of the 64 px tiny sets tests use
TINY_SIZE = 64


@dataclass
class TinySet:
    """train.tiny_data's procedural images (RGB uint8), defect masks, labels (1 = defect) and area of interest."""

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    aoi: np.ndarray


def handed_over() -> Path | None:
    """The folder of ready-made fixtures, or None where they are made here."""
    setting = os.environ.get(FIXTURES_ENV)
    if not setting:
        return None
    folder = Path(setting)
    if not (folder / "tiny_bundle" / "bundle" / "manifest.json").is_file():
        raise RuntimeError(
            f"{FIXTURES_ENV}={folder}: no tiny_bundle/bundle/manifest.json there; expected the folder written by "
            f"`python -m tests.support.build_fixtures {folder}` in the full venv"
        )
    return folder


def bundle(name: str, out_dir: Path) -> Path:
    """The small real bundle `name` (a key of BUNDLE_SEEDS) in out_dir/bundle, its sample images in out_dir/data
    (as train.recipes.small_bundle lays them out); a copy of its own, so a test may write beside it."""
    folder = handed_over()
    if folder is None:
        from onen.train.recipes import small_bundle

        return small_bundle(out_dir, seed=BUNDLE_SEEDS[name])
    shutil.copytree(folder / name, out_dir, dirs_exist_ok=True)
    return out_dir / "bundle"


def tiny_set(seed: int, count: int) -> TinySet:
    """train.tiny_data.make_tiny_set(seed, count, 64), or the copy of it handed over."""
    folder = handed_over()
    if folder is None:
        from onen.train.tiny_data import make_tiny_set

        made = make_tiny_set(seed=seed, count=count, size=TINY_SIZE)
        return TinySet(made.images, made.masks, made.labels, made.aoi)
    path = folder / "tiny_sets" / f"seed{seed}-count{count}.npz"
    if not path.is_file():
        raise RuntimeError(f"{path}: missing; add ({seed}, {count}) to TINY_SETS in {__file__} and build again")
    with np.load(path) as saved:
        return TinySet(saved["images"], saved["masks"], saved["labels"], saved["aoi"])


def build_all(out_dir: Path) -> Path:
    """Makes every fixture above in out_dir (needs the full venv)."""
    if os.environ.get(FIXTURES_ENV):
        raise RuntimeError(f"unset {FIXTURES_ENV} to build the fixtures (it names ready-made ones)")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in BUNDLE_SEEDS:
        shutil.rmtree(out_dir / name, ignore_errors=True)
        bundle(name, out_dir / name)
    (out_dir / "tiny_sets").mkdir(exist_ok=True)
    for seed, count in TINY_SETS:
        data = tiny_set(seed, count)
        np.savez_compressed(
            out_dir / "tiny_sets" / f"seed{seed}-count{count}.npz",
            images=data.images,
            masks=data.masks,
            labels=data.labels,
            aoi=data.aoi,
        )
    return out_dir
