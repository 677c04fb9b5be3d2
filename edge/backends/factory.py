"""Choose the inference backend a model runs on: TensorRT on a station with an NVIDIA GPU, else the faster CPU runtime.

`openvino` (asked for by name) runs OpenVINO on the CPU, in bf16 where the CPU computes it natively.
`auto` never fails for want of TensorRT: it falls back to the CPU and says so (log + `backend_fallback`
event), so a station still inspects while someone installs JetPack's TensorRT, or when the engine cannot be
built or fails its parity check. On the CPU `auto` serves ONNX Runtime, or OpenVINO where it is installed and
measured faster on this machine (`cpu_choice`: timed once, cached beside the engines, announced as a
`backend_selected` event). `tensorrt` asked for explicitly fails with what to install instead of silently
running slower.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from onen.edge.backends.base import Backend
from onen.edge.bundle import Bundle
from onen.edge.config_models import BACKEND_KINDS
from onen.edge.errors import OnenError
from onen.edge.extras import missing_module_message

if TYPE_CHECKING:
    from onen.edge.backends.onnxruntime_backend import CpuLayout

log = logging.getLogger(__name__)

EventCallback = Callable[[str, dict[str, Any]], None]

INSTALL_HINT = (
    "install TensorRT's Python bindings and pycuda (on a Jetson: `sudo apt install python3-libnvinfer` from JetPack "
    "and `pip install pycuda`; on an RTX station: `pip install onen-inspect[tensorrt]`), "
    "or set `backend: onnxruntime` for this model"
)


RUNTIME_NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}


class BackendUnavailable(OnenError):
    """The backend asked for cannot run on this machine; the message says what to install or choose."""


@dataclass(frozen=True)
class TensorRtProbe:
    """Whether TensorRT can run here, and what the running GPU is (the engine cache key depends on it)."""

    available: bool
    reason: str = ""
    tensorrt_version: str = ""
    gpu_name: str = ""
    compute_capability: str = ""  # "8.7"


def probe_tensorrt(device_index: int = 0) -> TensorRtProbe:
    """Import tensorrt and pycuda and look for a CUDA device, without creating a CUDA context."""
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError as error:
        return TensorRtProbe(False, f"the tensorrt Python module is not installed ({error})")
    try:
        cuda = importlib.import_module("pycuda.driver")
    except ImportError as error:
        return TensorRtProbe(False, f"pycuda is not installed ({error})", tensorrt_version=trt.__version__)
    try:
        cuda.init()
        count = cuda.Device.count()
    except Exception as error:  # pycuda raises its own LogicError/RuntimeError when there is no driver
        return TensorRtProbe(False, f"no usable CUDA driver ({error})", tensorrt_version=trt.__version__)
    if count <= device_index:
        return TensorRtProbe(
            False, f"no CUDA GPU with index {device_index} (found {count})", tensorrt_version=trt.__version__
        )
    device = cuda.Device(device_index)
    major, minor = device.compute_capability()
    return TensorRtProbe(True, "", trt.__version__, device.name(), f"{major}.{minor}")


def create_backend(
    bundle: Bundle, kind: str = "auto", on_event: EventCallback | None = None, cpu_layout: CpuLayout | None = None
) -> Backend:
    """Open `bundle` on the backend `kind` (one of BACKEND_KINDS). `cpu_layout` (a
    `CpuLayout`) is how ONNX Runtime uses the CPU cores; None = one call at a time on all cores."""
    if kind not in BACKEND_KINDS:
        raise OnenError(f"backend {kind!r} is unknown; expected one of {', '.join(BACKEND_KINDS)}")
    if kind == "onnxruntime":
        return _onnxruntime(bundle, cpu_layout)
    if kind == "openvino":
        return _openvino(bundle, cpu_layout, on_event)
    probe = probe_tensorrt()
    if kind == "tensorrt":
        if not probe.available:
            raise BackendUnavailable(
                f"backend 'tensorrt' for {bundle.path} cannot run here: {probe.reason}; {INSTALL_HINT}"
            )
        return _tensorrt(bundle, probe, on_event)
    if probe.available:
        try:
            return _tensorrt(bundle, probe, on_event)
        except OnenError as error:  # engine build/parity failed: keep inspecting on ONNX Runtime
            return _fall_back(
                bundle, f"TensorRT is available but the engine cannot be served: {error}", on_event, cpu_layout
            )
    return _fall_back(bundle, probe.reason, on_event, cpu_layout)


def _fall_back(
    bundle: Bundle, reason: str, on_event: EventCallback | None, cpu_layout: CpuLayout | None = None
) -> Backend:
    from onen.edge.backends.cpu_choice import choose_cpu_backend

    backend, selected = choose_cpu_backend(bundle, cpu_layout, on_event)
    detail = {"bundle": str(bundle.path), "requested": "auto", "using": backend.name, "reason": reason}
    log.warning("TensorRT not used for %s (%s); running on %s", bundle.path, reason, RUNTIME_NAMES[backend.name])
    if on_event is not None:
        on_event("backend_fallback", detail)
        if selected is not None:
            on_event("backend_selected", selected)
    return backend


def _onnxruntime(bundle: Bundle, cpu_layout: CpuLayout | None = None) -> Backend:
    from onen.edge.backends.onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend(bundle, layout=cpu_layout)


def _openvino(bundle: Bundle, cpu_layout: CpuLayout | None = None, on_event: EventCallback | None = None) -> Backend:
    try:
        from onen.edge.backends.openvino_backend import OpenVinoBackend
    except ImportError as error:
        raise BackendUnavailable(
            f"backend 'openvino' for {bundle.path} cannot run here: "
            f"{missing_module_message(error.name or 'openvino')}; or set `backend: onnxruntime` for this model"
        ) from error
    return OpenVinoBackend(bundle, layout=cpu_layout, on_event=on_event)


def _tensorrt(bundle: Bundle, probe: TensorRtProbe, on_event: EventCallback | None) -> Backend:
    from onen.edge.backends.tensorrt_backend import TensorRtBackend

    return TensorRtBackend(bundle, probe=probe, on_event=on_event)
