"""Backend choice: `auto` falls back to ONNX Runtime (with an event), `tensorrt` fails clearly without TensorRT/GPU."""

from __future__ import annotations

import numpy as np
import pytest
from support.onnx_models import HEIGHT, WIDTH

from onen.edge.backends.factory import BackendUnavailable, create_backend, probe_tensorrt
from onen.edge.backends.onnxruntime_backend import OnnxRuntimeBackend
from onen.edge.errors import OnenError

TRT_PROBE = probe_tensorrt()
needs_no_tensorrt = pytest.mark.skipif(
    TRT_PROBE.available, reason="TensorRT and a GPU are present; this checks the machine without them"
)


def test_onnxruntime_is_used_when_asked(mean_bundle):
    backend = create_backend(mean_bundle, "onnxruntime")
    assert isinstance(backend, OnnxRuntimeBackend)
    batch = np.full((2, HEIGHT, WIDTH, 3), 51, dtype=np.uint8)
    outputs = backend.infer(batch)
    np.testing.assert_allclose(outputs.score, [0.2, 0.2], rtol=1e-5)
    assert outputs.anomaly_map.shape == (2, 1, HEIGHT, WIDTH)
    assert outputs.class_logits.shape == (2, 2)


@needs_no_tensorrt
def test_auto_falls_back_to_onnxruntime_and_says_so(mean_bundle, caplog):
    events = []
    backend = create_backend(mean_bundle, "auto", on_event=lambda kind, detail: events.append((kind, detail)))
    assert isinstance(backend, OnnxRuntimeBackend)
    assert [kind for kind, _ in events] == ["backend_fallback"]
    detail = events[0][1]
    assert detail["using"] == "onnxruntime" and detail["requested"] == "auto"
    assert detail["reason"] == TRT_PROBE.reason and detail["reason"]
    assert "TensorRT not used" in caplog.text and "running on ONNX Runtime" in caplog.text


@needs_no_tensorrt
def test_tensorrt_without_tensorrt_says_what_to_install(mean_bundle):
    with pytest.raises(BackendUnavailable) as caught:
        create_backend(mean_bundle, "tensorrt")
    message = str(caught.value)
    assert str(mean_bundle.path) in message
    assert "python3-libnvinfer" in message and "onen-inspect[tensorrt]" in message
    assert "backend: onnxruntime" in message
    assert isinstance(caught.value, OnenError)


def test_unknown_backend_kind_is_refused(mean_bundle):
    with pytest.raises(OnenError, match="'cuda' is unknown; expected one of auto, onnxruntime, tensorrt, openvino"):
        create_backend(mean_bundle, "cuda")


# --- `onen build-engine` / `onen verify-engine` argument errors and the no-TensorRT message ----------

from onen.edge.cli import main as onen  # noqa: E402


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--int8"], "--int8 needs --calib-images DIR|LIST"),
        (["--workspace", "0"], "--workspace must be > 0 GB, got 0.0"),
        (["--workspace", "-2"], "--workspace must be > 0 GB, got -2.0"),
        (["--max-batch", "0"], "--max-batch must be >= 1, got 0"),
        (["--calib-images", "imgs"], "--calib-images is only used with --int8"),
        (["--int8", "--calib-images", "no-such-folder"], "no-such-folder: calibration images not found"),
    ],
)
def test_build_engine_argument_errors(mean_bundle, capsys, arguments, message):
    assert onen(["build-engine", str(mean_bundle.path), *arguments]) == 2
    assert message in capsys.readouterr().err


def test_build_engine_conflicting_precisions_and_missing_bundle(tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        onen(["build-engine", str(tmp_path), "--fp16", "--int8"])
    assert caught.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert onen(["build-engine", str(tmp_path / "missing")]) == 2
    assert f"{tmp_path / 'missing'}: bundle does not exist" in capsys.readouterr().err


@needs_no_tensorrt
def test_build_engine_without_tensorrt_exits_2_with_what_to_install(mean_bundle):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "onen.edge.cli", "build-engine", str(mean_bundle.path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "onen build-engine: error: cannot build a TensorRT engine here" in result.stderr
    assert "python3-libnvinfer" in result.stderr and "Traceback" not in result.stderr
    assert not mean_bundle.engines_dir.exists()


@needs_no_tensorrt
def test_verify_engine_without_tensorrt(mean_bundle, capsys, tmp_path):
    assert onen(["verify-engine", str(mean_bundle.path), "--score-tol", "0"]) == 2
    assert "--score-tol and --map-tol must be > 0" in capsys.readouterr().err
    assert onen(["verify-engine", str(mean_bundle.path), "--engine", str(tmp_path / "x.engine")]) == 2
    assert "x.engine: engine file does not exist" in capsys.readouterr().err
    # the mean bundle has no reference images: said before any TensorRT question
    assert onen(["verify-engine", str(mean_bundle.path)]) == 2
    assert "manifest has no reference images" in capsys.readouterr().err


@needs_no_tensorrt
def test_verify_engine_runs_onnxruntime_then_says_tensorrt_is_missing(tiny_bundle, capsys):
    assert onen(["verify-engine", str(tiny_bundle)]) == 2
    captured = capsys.readouterr()
    assert "parity PASSED on onnxruntime" in captured.out
    assert "cannot verify a TensorRT engine here" in captured.err
