"""ONNX Runtime backend: CPU everywhere, CUDA provider when the installed onnxruntime has it.

A sequential caller (evaluation, calibration, parity checks) gets ONNX Runtime's defaults: one call on
all cores. The daemon asks for the throughput layout (`CpuLayout.choose`): a small model spread over every core
spends much of each call waiting at the barriers between its parallel sections, and any other work of
the daemon (decoding, post-processing, MQTT) that lands on one of those cores stalls the whole call.
Two calls at once, each on its own share of the cores, keep the cores busy instead (measured in
`onen bench daemon`). `parallel_calls: 1` in the model's config gives the latency layout back (one
call on all cores) for triggered stations where one frame at a time matters more than frames/s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from onen.edge.backends.base import Backend, ModelOutputs
from onen.edge.bundle import OUTPUT_NAMES, Bundle

DEFAULT_PARALLEL_CALLS = 2


@dataclass(frozen=True)
class CpuLayout:
    """How a CPU session uses the cores: `parallel_calls` calls at once, `threads_per_call` threads each."""

    parallel_calls: int
    threads_per_call: int

    @classmethod
    def choose(
        cls, parallel_calls: int | None = None, threads_per_call: int | None = None, cores: int | None = None
    ) -> CpuLayout:
        """Fill what the config left out (None): two calls at once when there are two cores or more, and the
        cores shared out between them."""
        cores = max(1, cores or os.cpu_count() or 1)
        parallel = parallel_calls or (DEFAULT_PARALLEL_CALLS if cores >= 2 else 1)
        threads = threads_per_call or max(1, cores // parallel)
        return cls(parallel, threads)


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, bundle: Bundle, providers: list[str] | None = None, layout: CpuLayout | None = None):
        super().__init__(bundle)
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        on_gpu = any(p != "CPUExecutionProvider" for p in providers)
        # default and on a GPU (the device serialises calls anyway): one call at a time, ONNX Runtime's thread defaults
        self.layout = CpuLayout(1, 0) if on_gpu or layout is None else layout
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.layout.threads_per_call:
            options.intra_op_num_threads = self.layout.threads_per_call
        if self.layout.threads_per_call == 1:
            options.inter_op_num_threads = 1  # no idle thread pool per call
        self.session = ort.InferenceSession(str(bundle.model_path), sess_options=options, providers=providers)
        self.concurrent_calls = self.layout.parallel_calls  # Session.run is thread-safe
        self.input_name = bundle.manifest.input_name

    def infer(self, batch: np.ndarray) -> ModelOutputs:
        self.check_input(batch)
        score, anomaly_map, class_logits = self.session.run(list(OUTPUT_NAMES), {self.input_name: batch})
        return ModelOutputs(
            score.astype(np.float32, copy=False),
            anomaly_map.astype(np.float32, copy=False),
            class_logits.astype(np.float32, copy=False),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "providers": self.session.get_providers(),
            "precision": "fp32",
            "parallel_calls": self.layout.parallel_calls,
            "threads_per_call": self.layout.threads_per_call or "default",
        }
