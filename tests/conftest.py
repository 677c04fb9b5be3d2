"""Shared fixtures. Real parts only: real bundles trained here, real brokers, real files.

The bundles need torch to train: in the station venv (no torch) they are the files ONEN_TEST_FIXTURES names
(see support/prebuilt.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support import prebuilt

# Tests share 2 cores with each other; one intra-op thread keeps torch and ONNX Runtime from fighting.
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A small real OneN bundle, trained once (then cached) on generated data and exported."""
    return prebuilt.bundle("tiny_bundle", tmp_path_factory.mktemp("tiny-bundle"))


@pytest.fixture(scope="session")
def second_bundle(tmp_path_factory) -> Path:
    """Another real bundle (the same recipe, another seed): another model.onnx sha256, other reference outputs."""
    return prebuilt.bundle("second_bundle", tmp_path_factory.mktemp("second-bundle"))


@pytest.fixture(scope="session")
def magnetic_tile_dir() -> Path:
    path = SHARED_DATA / "magnetic_tile"
    if not path.is_dir():
        pytest.skip(f"real data not found at {path}")
    return path
