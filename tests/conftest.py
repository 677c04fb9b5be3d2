"""Shared fixtures. Real parts only: real bundles trained here, real brokers, real files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests share 2 cores with each other; one intra-op thread keeps torch and ONNX Runtime from fighting.
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A small real OneN bundle, trained once per test session on generated data and exported."""
    from onen.train.recipes import small_bundle

    return small_bundle(tmp_path_factory.mktemp("tiny-bundle"), seed=0)


@pytest.fixture(scope="session")
def magnetic_tile_dir() -> Path:
    path = SHARED_DATA / "magnetic_tile"
    if not path.is_dir():
        pytest.skip(f"real data not found at {path}")
    return path
