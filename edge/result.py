"""The result message (DESIGN.md "Result message") and its JSON Schema, which ships with the package.

A PLC/MES integrator codes against `edge/schemas/result.schema.json`; tests validate every message
against it, so the schema and what the daemon sends cannot drift apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from importlib import resources
from typing import Any

from onen.edge.bundle import Bundle
from onen.edge.postprocess import Inspection

SCHEMA_VERSION = 1
STAGES = ("capture", "preprocess", "infer", "postprocess", "total")


@dataclass
class ModelInfo:
    """The model fields of every result, computed once per bundle (hashing is not free)."""

    name: str
    version: str
    sha256: str
    backend: str

    @classmethod
    def from_bundle(cls, bundle: Bundle, backend: str) -> ModelInfo:
        return cls(bundle.manifest.name, bundle.manifest.version, bundle.onnx_sha256, backend)

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256, "backend": self.backend}


def capture_id(run_id: str, camera: str, seq: int) -> str:
    """One id per captured frame; the archive names a frame's images with it."""
    return f"{run_id}-{camera}-{int(seq)}"


def iso_utc(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_result(
    *,
    station: str,
    camera: str,
    seq: int,
    run_id: str,
    captured_at: float,
    model: ModelInfo,
    inspection: Inspection,
    latency_ms: dict[str, float],
    source: dict[str, Any],
    correlation_id: str | None = None,
) -> dict[str, Any]:
    """One result message as a dict, in the shape of the shipped schema."""
    height, width = inspection.frame_hw
    return {
        "schema_version": SCHEMA_VERSION,
        "station": station,
        "camera": camera,
        "seq": int(seq),
        "run_id": run_id,
        "capture_id": capture_id(run_id, camera, seq),
        "source": source,
        "captured_at": iso_utc(captured_at),
        "captured_at_epoch": round(float(captured_at), 6),
        "correlation_id": correlation_id,
        "model": model.to_dict(),
        "verdict": inspection.verdict,
        "score": round(inspection.score, 6),
        "threshold": inspection.threshold,
        "raw_score": round(inspection.raw_score, 6),
        "class": {
            "name": inspection.class_name,
            "probability": None if inspection.class_probability is None else round(inspection.class_probability, 6),
        },
        "regions": [
            {
                "bbox": [int(v) for v in r.bbox],
                "area": int(r.area),
                "peak": round(float(r.peak), 6),
                "polygon": r.polygon,
            }
            for r in inspection.regions
        ],
        "localisation": inspection.localisation,
        "frame": {"width": int(width), "height": int(height)},
        "latency_ms": {stage: round(max(0.0, float(latency_ms.get(stage, 0.0))), 3) for stage in STAGES},
    }


def encode(result: dict[str, Any]) -> bytes:
    return json.dumps(result, separators=(",", ":")).encode()


@lru_cache(maxsize=1)
def result_schema() -> dict[str, Any]:
    """The shipped schema (package data edge/schemas/result.schema.json)."""
    return json.loads(resources.files("onen.edge").joinpath("schemas/result.schema.json").read_text())


def validate_result(result: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when a message does not follow the shipped schema."""
    import jsonschema

    validator_cls = jsonschema.Draft202012Validator
    validator_cls(result_schema(), format_checker=validator_cls.FORMAT_CHECKER).validate(result)
