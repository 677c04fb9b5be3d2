"""TensorRT on a real GPU: build an FP16 engine from the tiny bundle, serve it, verify it.

These need tensorrt + pycuda + an NVIDIA GPU and are skipped elsewhere with the reason. Run them on a
Jetson / RTX station with `python3 -m pytest -m gpu tests/edge/test_tensorrt_gpu.py -v`. None of them has been
run yet: this project's machines have no GPU (see docs/jetson.md). On a Jetson without torch, point
ONEN_GPU_TEST_BUNDLE at a bundle made elsewhere, or ONEN_TEST_FIXTURES at the folder
`python -m tests.support.build_fixtures DIR` wrote elsewhere, instead of training the tiny bundle here.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from onen.edge.backends.factory import create_backend, probe_tensorrt
from onen.edge.backends.onnxruntime_backend import OnnxRuntimeBackend
from onen.edge.bundle import load_bundle
from onen.edge.cli import main as onen
from onen.edge.engines.keys import RuntimeTarget, engine_file_name, read_sidecar, sidecar_path, write_sidecar
from onen.edge.images import prepare_batch, read_image_rgb

PROBE = probe_tensorrt()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not PROBE.available, reason=f"needs TensorRT + pycuda + an NVIDIA GPU: {PROBE.reason}"),
]


@pytest.fixture
def bundle_dir(request, tmp_path):
    """A private copy of a small real bundle: ONEN_GPU_TEST_BUNDLE if set, else the trained tiny bundle."""
    given = os.environ.get("ONEN_GPU_TEST_BUNDLE")
    source = Path(given) if given else request.getfixturevalue("tiny_bundle")
    copy = shutil.copytree(source, tmp_path / "bundle", ignore=shutil.ignore_patterns("engines"))
    return copy


def reference_batch(bundle, count):
    frames = [read_image_rgb(bundle.path / ref.file) for ref in bundle.manifest.reference]
    frames = (frames * count)[:count]
    return prepare_batch(frames, bundle.manifest.input_height, bundle.manifest.input_width)


def test_build_engine_fp16_then_verify(bundle_dir, capsys):
    assert onen(["build-engine", str(bundle_dir), "--max-batch", "4", "--workspace", "1"]) == 0
    out = capsys.readouterr().out
    assert "parity PASSED on tensorrt" in out
    target = RuntimeTarget(PROBE.compute_capability, PROBE.tensorrt_version, PROBE.gpu_name)
    engines = sorted((bundle_dir / "engines").glob("*.engine"))
    assert [e.name for e in engines] in ([engine_file_name(target, "fp16")], [engine_file_name(target, "fp32")])
    sidecar = read_sidecar(sidecar_path(engines[0]))
    assert sidecar.requested_precision == "fp16" and sidecar.onnx_sha256 == load_bundle(bundle_dir).onnx_sha256
    assert sidecar.parity["passed"] is True
    manifest = load_bundle(bundle_dir).manifest
    assert [s.name for s in sidecar.inputs] == ["image"]
    assert (
        sidecar.inputs[0].shape == [-1, manifest.input_height, manifest.input_width, 3]
        and sidecar.inputs[0].dtype == "uint8"
    )
    assert {s.name for s in sidecar.outputs} == {"score", "anomaly_map", "class_logits"}
    assert (
        bundle_dir / "engines" / f"timing_{target.compute_capability}_trt{target.tensorrt_version}.cache"
    ).stat().st_size > 0
    # built once: a second call finds it
    assert onen(["build-engine", str(bundle_dir), "--no-verify"]) == 0
    assert "already built" in capsys.readouterr().out
    assert onen(["verify-engine", str(bundle_dir)]) == 0
    assert "max score difference engine vs ONNX Runtime" in capsys.readouterr().out


def test_backend_builds_checks_and_serves_like_onnxruntime(bundle_dir):
    events = []
    bundle = load_bundle(bundle_dir)
    backend = create_backend(bundle, "tensorrt", on_event=lambda kind, detail: events.append(kind))
    try:
        assert events == ["engine_build_started", "engine_built", "engine_parity"]
        batch = reference_batch(bundle, 6)  # more than max batch 4: served in two chunks
        engine_out = backend.infer(batch)
        ort_out = OnnxRuntimeBackend(bundle).infer(batch)
        assert engine_out.score.shape == ort_out.score.shape == (6,)
        assert engine_out.anomaly_map.shape == ort_out.anomaly_map.shape
        assert engine_out.class_logits.dtype == np.float32
        assert np.max(np.abs(engine_out.score - ort_out.score)) <= 0.01
        assert np.mean(np.abs(engine_out.anomaly_map - ort_out.anomaly_map)) <= 0.01
        assert backend.describe()["backend"] == "tensorrt"
    finally:
        backend.close()
    events.clear()
    again = create_backend(load_bundle(bundle_dir), "auto", on_event=lambda kind, detail: events.append(kind))
    again.close()
    assert events == [] and again.name == "tensorrt"


def test_engine_for_another_tensorrt_version_is_never_loaded(bundle_dir):
    from onen.edge.backends.tensorrt_backend import EngineMismatch, TensorRtBackend

    assert onen(["build-engine", str(bundle_dir), "--no-verify"]) == 0
    engine = next((bundle_dir / "engines").glob("*.engine"))
    sidecar = read_sidecar(sidecar_path(engine))
    sidecar.tensorrt_version = "9.9.9"
    write_sidecar(engine, sidecar)
    with pytest.raises(EngineMismatch, match="built with TensorRT 9.9.9"):
        TensorRtBackend(load_bundle(bundle_dir), engine_path=engine)
    events = []
    backend = create_backend(
        load_bundle(bundle_dir), "tensorrt", on_event=lambda kind, detail: events.append((kind, detail))
    )
    backend.close()
    assert events[0][0] == "engine_build_started" and "9.9.9" in json.dumps(events[0][1])


def test_engine_failing_parity_is_not_served_and_auto_falls_back(bundle_dir):
    from onen.edge.bundle import Manifest, write_manifest
    from onen.edge.engines.manager import EngineParityError

    manifest = Manifest.from_dict(json.loads((bundle_dir / "manifest.json").read_text()))
    manifest.reference[0].score += 0.5  # no engine can match this reference
    write_manifest(bundle_dir, manifest)
    events = []
    backend = create_backend(
        load_bundle(bundle_dir), "auto", on_event=lambda kind, detail: events.append((kind, detail))
    )
    assert backend.name == "onnxruntime"
    events = [(k, d) for k, d in events if k not in ("precision_fallback", "backend_selected")]  # OpenVINO's, if any
    kinds = [kind for kind, _ in events]
    assert kinds == ["engine_build_started", "engine_built", "engine_parity", "backend_fallback"]
    assert events[2][1]["passed"] is False and "parity" in events[3][1]["reason"]
    engine = next((bundle_dir / "engines").glob("*.engine"))
    assert read_sidecar(sidecar_path(engine)).parity["passed"] is False
    # asked for explicitly: refused at once, without building the same engine again
    events.clear()
    with pytest.raises(EngineParityError, match="failed the parity check"):
        create_backend(load_bundle(bundle_dir), "tensorrt", on_event=lambda kind, detail: events.append(kind))
    assert events == []
