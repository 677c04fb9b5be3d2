"""OpenVINO backend on a real bundle: served only after the reference check, same outputs as ONNX Runtime
within the bf16 tolerance, one request per calling thread, and a clear error where OpenVINO is missing."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

from onen.edge.backends.factory import create_backend
from onen.edge.backends.onnxruntime_backend import CpuLayout, OnnxRuntimeBackend
from onen.edge.bundle import load_bundle

openvino = pytest.importorskip("openvino", reason="the [openvino] extra is not installed")


def _frames(bundle, count: int) -> np.ndarray:
    shape = (count, bundle.manifest.input_height, bundle.manifest.input_width, 3)
    return np.random.default_rng(7).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("precision", [None, "f32"])
def test_openvino_serves_after_the_reference_check_and_matches_onnx_runtime(tiny_bundle, precision):
    from onen.edge.backends.openvino_backend import OpenVinoBackend, native_bf16

    bundle = load_bundle(tiny_bundle)
    backend = OpenVinoBackend(bundle, layout=CpuLayout(1, 1), precision=precision)
    expected_precision = precision or ("bf16" if native_bf16() else "f32")
    assert backend.precision == expected_precision and backend.parity.passed
    assert backend.describe()["precision"] == expected_precision
    frames = _frames(bundle, 5)
    ours, reference = backend.infer(frames), OnnxRuntimeBackend(bundle, layout=CpuLayout(1, 1)).infer(frames)
    tolerance = 1e-4 if expected_precision == "f32" else 2e-2
    assert ours.score.shape == reference.score.shape and ours.anomaly_map.shape == reference.anomaly_map.shape
    assert np.abs(ours.score - reference.score).max() <= tolerance
    assert np.abs(ours.anomaly_map - reference.anomaly_map).mean() <= tolerance
    assert ours.score.dtype == np.float32 and ours.class_logits.shape == reference.class_logits.shape


def test_two_callers_at_once_each_get_their_own_frames_outputs(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    backend = create_backend(bundle, "openvino", cpu_layout=CpuLayout(2, 1))
    assert backend.name == "openvino" and backend.concurrent_calls == 2
    frames = _frames(bundle, 40)
    alone = [float(backend.infer(frames[i : i + 1]).score[0]) for i in range(len(frames))]
    together: dict[int, float] = {}

    def work(indices: range) -> None:
        for i in indices:
            together[i] = float(backend.infer(frames[i : i + 1]).score[0])

    threads = [threading.Thread(target=work, args=(range(k, len(frames), 2),)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [together[i] for i in range(len(frames))] == alone  # same request per thread: no outputs mixed up


def test_without_openvino_the_backend_says_what_to_install(tiny_bundle):
    code = (
        "import sys; sys.modules['openvino'] = None\n"
        "from onen.edge.backends.factory import BackendUnavailable, create_backend\n"
        "from onen.edge.bundle import load_bundle\n"
        "try:\n"
        "    create_backend(load_bundle(sys.argv[1]), 'openvino')\n"
        "except BackendUnavailable as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tiny_bundle)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "backend 'openvino'" in done.stdout and "pip install 'onen-inspect[openvino]'" in done.stdout
