"""ONNX Runtime backend: CPU everywhere, CUDA provider when the installed onnxruntime has it."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort

from edge.backends.base import Backend, ModelOutputs
from edge.bundle import OUTPUT_NAMES, Bundle


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, bundle: Bundle, providers: list[str] | None = None, intra_op_threads: int = 0):
        super().__init__(bundle)
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        self.session = ort.InferenceSession(str(bundle.model_path), sess_options=options, providers=providers)
        self.input_name = bundle.manifest.input_name

    def infer(self, batch: np.ndarray) -> ModelOutputs:
        self.check_input(batch)
        score, anomaly_map, class_logits = self.session.run(list(OUTPUT_NAMES), {self.input_name: batch})
        return ModelOutputs(score.astype(np.float32), anomaly_map.astype(np.float32), class_logits.astype(np.float32))

    def describe(self) -> dict:
        return {"backend": self.name, "providers": self.session.get_providers(), "precision": "fp32"}
