"""`auto` on a CPU: ONNX Runtime or OpenVINO, measured on the real tiny bundle with both real runtimes, the
choice cached in the bundle's engines folder (reused, re-timed on another key or a damaged file, skipped where
the folder is read-only) and announced as `backend_selected`. No figure is asserted, only their consistency."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

from onen.edge.backends import cpu_choice
from onen.edge.backends.cpu_choice_cache import CHOICE_FILE
from onen.edge.backends.factory import create_backend, probe_tensorrt
from onen.edge.backends.onnxruntime_backend import CpuLayout
from onen.edge.bundle import load_bundle

pytestmark = pytest.mark.skipif(probe_tensorrt().available, reason="TensorRT runs here: `auto` never times the CPU")
needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="no [openvino] extra")


@pytest.fixture
def bundle_dir(tiny_bundle, tmp_path):
    return shutil.copytree(tiny_bundle, tmp_path / "bundle", ignore=shutil.ignore_patterns("engines"))


TWO_CALLS = CpuLayout(2, 1)  # the daemon's layout on 2 cores


def _open(bundle_dir, layout=TWO_CALLS):
    events: list[tuple[str, dict]] = []
    backend = create_backend(
        load_bundle(bundle_dir), "auto", on_event=lambda kind, detail: events.append((kind, detail)), cpu_layout=layout
    )
    selected = [detail for kind, detail in events if kind == "backend_selected"]
    assert len(selected) == 1, events
    fallback = [detail for kind, detail in events if kind == "backend_fallback"]
    assert len(fallback) == 1 and fallback[0]["using"] == backend.name
    return backend, selected[0]


def _no_timing(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("timed although a valid cached choice exists")

    monkeypatch.setattr(cpu_choice, "time_interleaved", refuse)


@needs_openvino
def test_auto_picks_the_faster_by_the_margin_and_caches_it_with_its_key(bundle_dir):
    backend, detail = _open(bundle_dir)
    assert backend.name == detail["using"] and detail["cached"] is False and detail["requested"] == "auto"
    assert detail["margin"] == cpu_choice.MARGIN and detail["calls_at_once"] == 2 and detail["rounds"] >= 5
    assert detail["onnxruntime_ms"] > 0 and detail["openvino_ms"] > 0
    faster = detail["openvino_ms"] <= detail["onnxruntime_ms"] * (1 - detail["margin"])
    assert detail["using"] == ("openvino" if faster else "onnxruntime")
    assert detail["openvino_precision"] in ("bf16", "f32")
    if backend.name == "openvino":
        assert backend.describe()["precision"] == detail["openvino_precision"]
    assert backend.concurrent_calls == 2

    import onnxruntime
    import openvino

    saved = json.loads((bundle_dir / "engines" / CHOICE_FILE).read_text())
    bundle = load_bundle(bundle_dir)
    assert saved["key"] == {
        "onnx_sha256": bundle.onnx_sha256,
        "cpu": saved["key"]["cpu"],
        "cores": os.cpu_count(),
        "onnxruntime": onnxruntime.__version__,
        "openvino": openvino.__version__,
        "parallel_calls": 2,
        "threads_per_call": 1,
    }
    assert saved["key"]["cpu"] and saved["using"] == detail["using"]
    assert (saved["onnxruntime_ms"], saved["openvino_ms"]) == (detail["onnxruntime_ms"], detail["openvino_ms"])


@needs_openvino
def test_a_second_open_reuses_the_cached_choice_without_timing(bundle_dir, monkeypatch):
    first, measured = _open(bundle_dir)
    cache = bundle_dir / "engines" / CHOICE_FILE
    written = cache.read_bytes()
    _no_timing(monkeypatch)
    again, cached = _open(bundle_dir)
    assert cached["cached"] is True and again.name == first.name == cached["using"]
    assert {k: v for k, v in cached.items() if k != "cached"} == {k: v for k, v in measured.items() if k != "cached"}
    assert cache.read_bytes() == written


@needs_openvino
def test_another_layout_is_timed_again(bundle_dir):
    _open(bundle_dir, CpuLayout(2, 1))
    backend, detail = _open(bundle_dir, CpuLayout(1, 2))
    assert detail["cached"] is False and detail["calls_at_once"] == 1 and backend.concurrent_calls == 1
    saved = json.loads((bundle_dir / "engines" / CHOICE_FILE).read_text())
    assert (saved["key"]["parallel_calls"], saved["key"]["threads_per_call"]) == (1, 2)


@needs_openvino
@pytest.mark.parametrize("damage", ["{not json", '{"format_version": 1, "using": "tensorrt"}', "[]"])
def test_a_damaged_cache_file_is_timed_again_and_rewritten(bundle_dir, caplog, damage):
    cache = bundle_dir / "engines" / CHOICE_FILE
    cache.parent.mkdir()
    cache.write_text(damage)
    backend, detail = _open(bundle_dir)
    assert detail["cached"] is False and backend.name == detail["using"]
    assert "damaged cached backend choice" in caplog.text and str(cache) in caplog.text
    assert json.loads(cache.read_text())["using"] == detail["using"]


@contextlib.contextmanager
def _read_only(folder):
    """chmod for a user; root writes through modes, so there the immutable flag (ext4 and most local filesystems)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip(f"cannot make {folder} read-only for root here (chattr +i refused)")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


@needs_openvino
def test_a_read_only_bundle_folder_times_each_open_and_says_so_once(bundle_dir, caplog):
    with _read_only(bundle_dir):
        first, one = _open(bundle_dir)
        second, two = _open(bundle_dir)
    assert one["cached"] is False and two["cached"] is False
    assert first.name == one["using"] and second.name == two["using"]
    assert caplog.text.count("cannot cache the backend choice") == 1
    assert not (bundle_dir / "engines").exists()


@needs_openvino
def test_a_model_openvino_does_not_reproduce_is_no_candidate(bundle_dir, monkeypatch):
    manifest_path = bundle_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for reference in manifest["reference"]:  # the stored outputs no longer match what the model computes
        reference["score"] = (reference["score"] + 0.5) % 1.0
    manifest_path.write_text(json.dumps(manifest))
    backend, detail = _open(bundle_dir)
    assert backend.name == "onnxruntime" and detail["using"] == "onnxruntime"
    assert detail["openvino_ms"] is None and detail["onnxruntime_ms"] is None
    assert "OpenVINO is no candidate" in detail["reason"] and "does not reproduce" in detail["reason"]
    _no_timing(monkeypatch)
    again, cached = _open(bundle_dir)
    assert again.name == "onnxruntime" and cached["cached"] is True and cached["reason"] == detail["reason"]


def test_without_openvino_auto_is_onnx_runtime_as_before(bundle_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    events: list[str] = []
    backend = create_backend(load_bundle(bundle_dir), "auto", on_event=lambda kind, detail: events.append(kind))
    assert backend.name == "onnxruntime" and events == ["backend_fallback"]
    assert not (bundle_dir / "engines").exists()
