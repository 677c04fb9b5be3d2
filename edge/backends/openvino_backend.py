"""OpenVINO backend: Intel's CPU runtime, with reduced precision where the CPU computes it natively.

On a CPU station this is what FP16 TensorRT is on a GPU: OpenVINO runs bf16 on CPUs with AVX-512-BF16
or AMX, and the result is served only if it reproduces the bundle's reference outputs (`edge.parity`);
otherwise the same graph is compiled again in f32 and checked again. The CPU layout (calls at once,
threads per call) is the ONNX Runtime backend's: one OpenVINO stream per parallel call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import openvino as ov

from onen.edge.backends.base import Backend, ModelOutputs
from onen.edge.backends.onnxruntime_backend import CpuLayout
from onen.edge.bundle import OUTPUT_NAMES, Bundle
from onen.edge.errors import OnenError
from onen.edge.parity import check_reference

log = logging.getLogger(__name__)
EventCallback = Callable[[str, dict[str, Any]], None]


def native_bf16(core: ov.Core | None = None) -> bool:
    """Whether this CPU computes bf16 natively (AVX-512-BF16 or AMX), as OpenVINO reports it."""
    return "BF16" in (core or ov.Core()).get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoBackend(Backend):
    name = "openvino"

    def __init__(
        self,
        bundle: Bundle,
        layout: CpuLayout | None = None,
        on_event: EventCallback | None = None,
        precision: str | None = None,
    ):
        """`precision` None: bf16 where the CPU computes it natively, else f32 ("f32" forces f32)."""
        super().__init__(bundle)
        self.layout = layout or CpuLayout(1, 0)
        self.core = ov.Core()
        self.model = self.core.read_model(str(bundle.model_path))
        self.input_name = bundle.manifest.input_name
        self.concurrent_calls = self.layout.parallel_calls
        self._local = threading.local()
        self.precision = precision or ("bf16" if native_bf16(self.core) else "f32")
        self.compiled = self._compile(self.precision)
        self.parity = check_reference(self, bundle)
        if not self.parity.passed and self.precision != "f32":
            reason = self.parity.summary_lines()[-1]
            log.warning("%s: OpenVINO bf16 fails the reference check (%s); compiling in f32", bundle.path, reason)
            if on_event is not None:
                on_event(
                    "precision_fallback", {"bundle": str(bundle.path), "from": "bf16", "to": "f32", "reason": reason}
                )
            self.precision = "f32"
            self.compiled = self._compile("f32")
            self.parity = check_reference(self, bundle)
        if not self.parity.passed:
            raise OnenError(
                f"{bundle.path}: OpenVINO does not reproduce the reference outputs: "
                + "; ".join(self.parity.summary_lines())
            )

    def _compile(self, precision: str) -> ov.CompiledModel:
        config: dict[str, object] = {
            "INFERENCE_PRECISION_HINT": precision,
            "NUM_STREAMS": self.layout.parallel_calls,
            "PERFORMANCE_HINT": "LATENCY" if self.layout.parallel_calls == 1 else "THROUGHPUT",
        }
        if self.layout.threads_per_call:
            config["INFERENCE_NUM_THREADS"] = self.layout.parallel_calls * self.layout.threads_per_call
        self._local = threading.local()  # requests belong to one compiled model
        return self.core.compile_model(self.model, "CPU", config)

    def _request(self) -> ov.InferRequest:
        """One infer request per calling thread: a request runs one call at a time, the model many."""
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        return request

    def infer(self, batch: np.ndarray) -> ModelOutputs:
        self.check_input(batch)
        request = self._request()
        request.infer({self.input_name: batch})
        score, anomaly_map, class_logits = (
            np.array(request.get_tensor(name).data, dtype=np.float32) for name in OUTPUT_NAMES
        )
        return ModelOutputs(score, anomaly_map, class_logits)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "device": "CPU",
            "precision": self.precision,
            "openvino": ov.__version__,
            "parallel_calls": self.layout.parallel_calls,
            "threads_per_call": self.layout.threads_per_call or "default",
        }
