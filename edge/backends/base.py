"""What every inference backend (ONNX Runtime, TensorRT) offers the pipeline.

A backend takes the bundle's input, uint8 RGB `[N, H, W, 3]`, and returns the three outputs of the
contract. Pre- and post-processing live outside the backends so they are shared and tested once.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import numpy as np

from onen.edge.bundle import Bundle


@dataclass
class ModelOutputs:
    score: np.ndarray  # float32 [N], 0..1
    anomaly_map: np.ndarray  # float32 [N, 1, H, W], 0..1
    class_logits: np.ndarray  # float32 [N, C]

    def __len__(self) -> int:
        return int(self.score.shape[0])

    def item(self, index: int) -> ModelOutputs:
        return ModelOutputs(
            self.score[index : index + 1], self.anomaly_map[index : index + 1], self.class_logits[index : index + 1]
        )


class Backend(abc.ABC):
    """One loaded model on one device.

    `concurrent_calls` says how many `infer` calls may run at the same time (from different threads) and
    are worth running so: 1 for a GPU engine with one execution context; more for ONNX Runtime on a CPU,
    where two single-threaded calls on two frames beat one call spread over both cores.
    """

    name: str = "abstract"
    concurrent_calls: int = 1

    def __init__(self, bundle: Bundle):
        self.bundle = bundle
        self.input_height = bundle.manifest.input_height
        self.input_width = bundle.manifest.input_width

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> ModelOutputs:
        """Run the model on uint8 `[N, H, W, 3]`."""

    def describe(self) -> dict[str, Any]:
        """What runs, for stats and events (backend, device, precision...)."""
        return {"backend": self.name}

    def close(self) -> None:  # noqa: B027 (optional hook: most backends have nothing to free)
        """Free device memory; the default has nothing to free."""

    def check_input(self, batch: np.ndarray) -> None:
        expected = (self.input_height, self.input_width, 3)
        if batch.dtype != np.uint8 or batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
            raise ValueError(
                f"backend input must be uint8 [N, {expected[0]}, {expected[1]}, 3], got {batch.dtype} {batch.shape}"
            )
