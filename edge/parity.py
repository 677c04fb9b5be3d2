"""Parity check: does a backend reproduce the outputs stored in the bundle for its reference images?

Export stores a few reference images with the outputs the training framework computed. Any backend
(ONNX Runtime, a freshly built FP16 TensorRT engine...) is run on them and compared; FP16 accuracy
drops after conversion are the most common complaint about other tools, so the daemon runs this before
it serves a newly built engine and `onen verify-engine` runs it on demand.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from onen.edge.backends.base import Backend
from onen.edge.bundle import Bundle
from onen.edge.errors import BundleError
from onen.edge.images import prepare_batch, read_image_rgb


@dataclass
class ReferenceComparison:
    file: str
    expected_score: float
    score: float
    score_diff: float
    map_mean_abs_diff: float
    class_logits_max_diff: float
    same_class: bool
    passed: bool


@dataclass
class ParityReport:
    backend: str
    score_tol: float
    map_mean_tol: float
    comparisons: list[ReferenceComparison] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.comparisons) and all(c.passed for c in self.comparisons)

    @property
    def max_score_diff(self) -> float:
        return max((c.score_diff for c in self.comparisons), default=float("nan"))

    @property
    def max_map_mean_abs_diff(self) -> float:
        return max((c.map_mean_abs_diff for c in self.comparisons), default=float("nan"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "backend": self.backend,
            "score_tol": self.score_tol,
            "map_mean_tol": self.map_mean_tol,
            "max_score_diff": self.max_score_diff,
            "max_map_mean_abs_diff": self.max_map_mean_abs_diff,
            "comparisons": [asdict(c) for c in self.comparisons],
        }

    def summary_lines(self) -> list[str]:
        lines = [
            f"{c.file}: score {c.score:.4f} vs {c.expected_score:.4f} (diff {c.score_diff:.4f}), "
            f"map mean abs diff {c.map_mean_abs_diff:.4f}, class {'same' if c.same_class else 'DIFFERENT'} "
            f"-> {'ok' if c.passed else 'FAIL'}"
            for c in self.comparisons
        ]
        verdict = "PASSED" if self.passed else "FAILED"
        lines.append(
            f"parity {verdict} on {self.backend}: max score diff {self.max_score_diff:.4f} (tol {self.score_tol}), "
            f"max map mean abs diff {self.max_map_mean_abs_diff:.4f} (tol {self.map_mean_tol}), "
            f"{len(self.comparisons)} reference image(s)"
        )
        return lines


def _load_reference_map(bundle: Bundle, relative: str) -> np.ndarray:
    path = bundle.path / relative
    if not path.is_file():
        raise BundleError(f"{path}: reference anomaly map listed in the manifest is missing")
    try:
        anomaly_map = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise BundleError(f"{path}: not a readable .npy anomaly map: {error}") from error
    expected = (bundle.manifest.input_height, bundle.manifest.input_width)
    anomaly_map = np.squeeze(anomaly_map)
    if anomaly_map.shape != expected:
        raise BundleError(f"{path}: reference map has shape {anomaly_map.shape}, expected {expected} (input H, W)")
    return np.asarray(anomaly_map, dtype=np.float32)


def check_reference(
    backend: Backend, bundle: Bundle, score_tol: float = 0.01, map_mean_tol: float = 0.01
) -> ParityReport:
    """Run `backend` on the bundle's reference images and compare with the stored outputs."""
    references = bundle.manifest.reference
    if not references:
        raise BundleError(f"{bundle.path}: manifest has no reference images; cannot check an engine against it")
    height, width = bundle.manifest.input_height, bundle.manifest.input_width
    frames = [read_image_rgb(bundle.path / ref.file) for ref in references]
    outputs = backend.infer(prepare_batch(frames, height, width))
    backend_name = backend.describe().get("backend", backend.name)
    report = ParityReport(backend=str(backend_name), score_tol=score_tol, map_mean_tol=map_mean_tol)
    for index, ref in enumerate(references):
        expected_map = _load_reference_map(bundle, ref.anomaly_map_file)
        actual_map = outputs.anomaly_map[index, 0]
        expected_logits = np.asarray(ref.class_logits, dtype=np.float32)
        actual_logits = outputs.class_logits[index]
        if expected_logits.shape != actual_logits.shape:
            raise BundleError(
                f"{bundle.path}: reference {ref.file} has {expected_logits.size} class logits, the model gives "
                f"{actual_logits.size}"
            )
        score = float(outputs.score[index])
        score_diff = abs(score - float(ref.score))
        map_diff = float(np.mean(np.abs(actual_map - expected_map)))
        report.comparisons.append(
            ReferenceComparison(
                file=ref.file,
                expected_score=float(ref.score),
                score=score,
                score_diff=score_diff,
                map_mean_abs_diff=map_diff,
                class_logits_max_diff=float(np.max(np.abs(actual_logits - expected_logits))),
                same_class=int(np.argmax(actual_logits)) == int(np.argmax(expected_logits)),
                passed=score_diff <= score_tol and map_diff <= map_mean_tol,
            )
        )
    return report
