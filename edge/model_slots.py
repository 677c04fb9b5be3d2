"""Opening a model for serving, with one set of rules for daemon start and for a model update.

A bundle is served only when its engine keeps the contract the manifest states (input name and size,
outputs `score`, `anomaly_map`, `class_logits`) and agrees with the bundle's reference outputs; a
bundle without reference images is refused (nothing could show the engine computes what was trained).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from onen.edge.backends.base import Backend
from onen.edge.bundle import OUTPUT_NAMES, Bundle
from onen.edge.errors import OnenError
from onen.edge.result import ModelInfo

if TYPE_CHECKING:
    from onen.edge.config import ModelConfig


class ModelRefused(OnenError):
    """A bundle the station will not serve; the message says which bundle and why."""


@dataclass
class OpenedModel:
    backend: Backend
    info: ModelInfo
    parity: dict[str, Any] | None


def contract_problems(backend: Backend, bundle: Bundle) -> list[str]:
    """How an ONNX Runtime session breaks the manifest's contract (empty when it keeps it)."""
    session = getattr(backend, "session", None)
    if session is None or not hasattr(session, "get_inputs"):
        return []
    manifest, problems = bundle.manifest, []
    inputs = {i.name: i.shape for i in session.get_inputs()}
    if manifest.input_name not in inputs:
        problems.append(f"no input {manifest.input_name!r} (the model has {', '.join(inputs) or 'none'})")
    else:
        shape = inputs[manifest.input_name]
        spatial = shape[1:3] if manifest.input_layout == "NHWC" else shape[2:4]
        expected = [manifest.input_height, manifest.input_width]
        if len(shape) != 4 or any(isinstance(d, int) and d != e for d, e in zip(spatial, expected, strict=True)):
            problems.append(
                f"input {manifest.input_name!r} has shape {shape}, the manifest says {manifest.input_layout} "
                f"{manifest.input_height}x{manifest.input_width}"
            )
    outputs = {o.name for o in session.get_outputs()}
    missing = [name for name in OUTPUT_NAMES if name not in outputs]
    if missing:
        problems.append(f"outputs {', '.join(missing)} missing (the model has {', '.join(sorted(outputs)) or 'none'})")
    return problems


class ModelSlots:
    """Opens bundles for serving: backend, contract check, parity check, model info."""

    def __init__(self, open_backend: Callable[[Bundle, ModelConfig], Backend]) -> None:
        self._open_backend = open_backend

    def open(self, name: str, bundle: Bundle, model_cfg: ModelConfig, check_parity: bool = True) -> OpenedModel:
        from onen.edge.parity import check_reference

        label = f"model {name!r}: bundle {bundle.manifest.name} {bundle.manifest.version} ({bundle.path})"
        if not bundle.manifest.reference:
            raise ModelRefused(
                f"{label} has no reference images; the station cannot check the engine before serving it "
                "(export the bundle again with its reference samples)"
            )
        backend = self._open_backend(bundle, model_cfg)
        try:
            problems = contract_problems(backend, bundle)
            if problems:
                raise ModelRefused(f"{label}: model.onnx breaks the bundle contract: " + "; ".join(problems))
            parity = None
            if check_parity:
                try:
                    report = check_reference(backend, bundle)
                except (ValueError, KeyError, RuntimeError) as error:
                    raise ModelRefused(
                        f"{label}: the {backend.name} engine cannot run the reference images "
                        f"({type(error).__name__}: {error})"
                    ) from error
                parity = {
                    "passed": report.passed,
                    "max_score_diff": report.max_score_diff,
                    "max_map_mean_abs_diff": report.max_map_mean_abs_diff,
                }
                if not report.passed:
                    raise ModelRefused(
                        f"{label}: the {backend.name} engine disagrees with the bundle's reference outputs:\n"
                        + "\n".join(report.summary_lines())
                    )
            return OpenedModel(backend, ModelInfo.from_bundle(bundle, backend.name), parity)
        except BaseException:
            backend.close()
            raise
