"""The model bundle: `model.onnx` + `manifest.json` (+ `engines/`, `signature`), see DESIGN.md.

Training writes it (`write_manifest`), everything else reads it (`load_bundle`). Loading verifies the
sha256 of every file the manifest lists, so a half-copied or tampered bundle never reaches a camera.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tarfile
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from onen.edge.errors import BundleError
from onen.edge.images import RESIZE, RESIZE_MODES

FORMAT_VERSION = 1
OUTPUT_NAMES = ("score", "anomaly_map", "class_logits")
INPUT_NAME = "image"
MANIFEST = "manifest.json"
MODEL = "model.onnx"
SIGNATURE = "signature"
# Where a threshold came from, the one vocabulary of manifests, run summaries and eval reports:
#   validation    chosen on the run's own validation split (good images' quantile, defects' low tail)
#   calibration   fitted on a camera's known-good parts (`onen calibrate`)
#   default       a stated fallback value (0.5), used when validation had no good image: say so, never silently
#   user          the value given on the command line (`onen eval --threshold`)
#   test_best_f1  the best-F1 threshold on the evaluated images themselves: optimistic, only when asked for
THRESHOLD_SOURCES = ("validation", "calibration", "default", "user", "test_best_f1")


@dataclass
class Thresholds:
    """Default decision thresholds; a camera's calibration file overrides them."""

    image: float = 0.5  # on the raw model score
    pixel: float = 0.5  # on the anomaly map, for regions
    min_region_area: int = 16  # px at model input resolution
    source: str = "default"  # THRESHOLD_SOURCES: where image and pixel came from (the values above are the fallbacks)


@dataclass
class ScoreNormalisation:
    """Maps a raw score to the published 0..1 score with the decision threshold at 0.5 (piecewise linear)."""

    raw_threshold: float = 0.5
    raw_low: float = 0.0
    raw_high: float = 1.0


@dataclass
class ReferenceSample:
    """An image stored in the bundle with the outputs the exporting framework computed for it."""

    file: str  # path inside the bundle, e.g. reference/000.png (RGB at input size)
    score: float
    class_logits: list[float]
    anomaly_map_mean: float
    anomaly_map_file: str  # .npy with the float32 [H, W] map


@dataclass
class Manifest:
    name: str
    version: str
    family: str  # "onen-student", "teacher-cnn", ...
    input_height: int
    input_width: int
    class_names: list[str]  # class 0 == "good"
    resize: str = RESIZE  # edge.images.RESIZE_MODES: how training and the station bring an image to HxW
    classes_supervised: bool = True  # False: trained without class labels; results then say only "defect"
    channel_order: str = "RGB"
    input_dtype: str = "uint8"
    input_layout: str = "NHWC"
    normalisation: dict[str, Any] = field(
        default_factory=lambda: {
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "scale": 255.0,
            "in_graph": True,
        }
    )
    input_name: str = INPUT_NAME
    output_names: list[str] = field(default_factory=lambda: list(OUTPUT_NAMES))
    format_version: int = FORMAT_VERSION
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    training: dict[str, Any] = field(default_factory=dict)  # data summary, supervision, seed...
    metrics: dict[str, Any] = field(default_factory=dict)
    thresholds: Thresholds = field(default_factory=Thresholds)
    score_normalisation: ScoreNormalisation = field(default_factory=ScoreNormalisation)
    reference: list[ReferenceSample] = field(default_factory=list)
    # the tile grid the graph cuts its input into (rows, cols, tile size, overlap; train.tiling), for the record:
    # the graph takes the whole frame and stitches the tiles itself, so nothing on the station reads it
    tiles: dict[str, Any] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if data["tiles"] is None:
            del data["tiles"]  # an untiled bundle's manifest stays as it was before the key existed
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = MANIFEST) -> Manifest:
        data = dict(data)
        try:
            data["thresholds"] = Thresholds(**data.get("thresholds", {}))
            data["score_normalisation"] = ScoreNormalisation(**data.get("score_normalisation", {}))
            data["reference"] = [ReferenceSample(**r) for r in data.get("reference", [])]
            manifest = cls(**data)
        except TypeError as error:
            raise BundleError(f"{source}: does not follow manifest format {FORMAT_VERSION}: {error}") from error
        if manifest.format_version > FORMAT_VERSION:
            raise BundleError(
                f"{source}: format_version {manifest.format_version} is newer than this software reads "
                f"({FORMAT_VERSION}); update onen"
            )
        if manifest.resize not in RESIZE_MODES:
            raise BundleError(
                f"{source}: key 'resize' is '{manifest.resize}'; this onen resizes by {', '.join(RESIZE_MODES)}, so "
                "the model would see other pixels than it was trained on; train and export it again with this onen"
            )
        if not manifest.class_names or manifest.class_names[0] != "good":
            raise BundleError(f"{source}: class_names must start with 'good', got {manifest.class_names}")
        if manifest.thresholds.source not in THRESHOLD_SOURCES:
            raise BundleError(
                f"{source}: thresholds.source must be one of {', '.join(THRESHOLD_SOURCES)}, "
                f"got '{manifest.thresholds.source}'"
            )
        return manifest


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(bundle_dir: str | Path, manifest: Manifest) -> Path:
    """Hash every file of the bundle (but the manifest, signature and engines) and write manifest.json."""
    bundle_dir = Path(bundle_dir)
    if not (bundle_dir / MODEL).is_file():
        raise BundleError(f"{bundle_dir}: no {MODEL} to put in a bundle")
    manifest.files = {
        str(p.relative_to(bundle_dir)): sha256_file(p)
        for p in sorted(bundle_dir.rglob("*"))
        if p.is_file() and p.name not in (MANIFEST, SIGNATURE) and "engines" not in p.relative_to(bundle_dir).parts
    }
    path = bundle_dir / MANIFEST
    path.write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
    return path


@dataclass
class Bundle:
    """A verified bundle on disk."""

    path: Path
    manifest: Manifest

    @property
    def model_path(self) -> Path:
        return self.path / MODEL

    @property
    def engines_dir(self) -> Path:
        return self.path / "engines"

    @property
    def onnx_sha256(self) -> str:
        return self.manifest.files[MODEL]

    @property
    def manifest_sha256(self) -> str:
        return sha256_file(self.path / MANIFEST)


def _unpack_tar(tar_path: Path) -> Path:
    target = Path(tempfile.mkdtemp(prefix="onen-bundle-"))
    with tarfile.open(tar_path) as archive:
        archive.extractall(target, filter="data")
    entries = [p for p in target.iterdir()]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else target


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Open a bundle directory or .tar, check the manifest and (by default) every file's sha256."""
    path = Path(path)
    if not path.exists():
        raise BundleError(f"{path}: bundle does not exist")
    if path.is_file():
        if not tarfile.is_tarfile(path):
            raise BundleError(f"{path}: expected a bundle directory or a .tar of one")
        path = _unpack_tar(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{path}: no {MANIFEST}; not a model bundle")
    try:
        data = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as error:
        raise BundleError(f"{manifest_path}: invalid JSON at line {error.lineno}: {error.msg}") from error
    manifest = Manifest.from_dict(data, source=str(manifest_path))
    if MODEL not in manifest.files:
        raise BundleError(f"{manifest_path}: 'files' does not list {MODEL}")
    if verify:
        for relative, expected in manifest.files.items():
            file_path = path / relative
            if not file_path.is_file():
                raise BundleError(f"{file_path}: listed in {MANIFEST} but missing")
            actual = sha256_file(file_path)
            if actual != expected:
                raise BundleError(
                    f"{file_path}: sha256 {actual[:12]}... does not match {MANIFEST} ({expected[:12]}...); bundle "
                    "damaged or modified"
                )
    return Bundle(path=path, manifest=manifest)


def pack_bundle(bundle_dir: str | Path, tar_path: str | Path) -> Path:
    """Pack a bundle directory as a .tar for shipping to stations."""
    bundle_dir, tar_path = Path(bundle_dir), Path(tar_path)
    with tarfile.open(tar_path, "w") as archive:
        archive.add(bundle_dir, arcname=bundle_dir.name)
    return tar_path
