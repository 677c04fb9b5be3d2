"""Fixtures of the edge tests (no torch: these run in the station venv too)."""

from __future__ import annotations

import pytest
from support.onnx_models import write_mean_bundle

from onen.edge.bundle import load_bundle


@pytest.fixture
def mean_bundle(tmp_path):
    return load_bundle(write_mean_bundle(tmp_path / "bundle"))
