"""The station's calibration store: every installed calibration kept as its own version, per camera.

Layout: `<root>/<camera>/<NNNN>-<sha12>/calibration.yaml` (+ `aoi.png`), where sha12 is the start of the
sha256 of the stored YAML, with `current` / `previous` pointer files and `history.jsonl` (one line each
time a version became current: version, model sha256, time, action). Why: a push must never write over
a file the engineer made (the file the station YAML names is only read, as the seed), and a model rollback
must find the calibration that was current for that model however many pushes ago (the last history line
for its sha). Versions are small and never deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from onen.edge.bundle import Bundle
from onen.edge.calibration_file import load_calibration
from onen.edge.calibration_view import CalibrationError, CameraCalibration
from onen.edge.pointers import CURRENT, PREVIOUS, read_pointer, write_pointer
from onen.edge.spool import spool_file

if TYPE_CHECKING:
    from onen.edge.config import StationConfig

HISTORY, FILE, AOI = "history.jsonl", "calibration.yaml", "aoi.png"


class CalibrationStore:
    """Versions of each camera's calibration under `root/<camera>/`, bound to the model sha they were made for."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def folder(self, camera: str) -> Path:
        return self.root / camera

    # ---- reading -------------------------------------------------------------------------------------
    def current(self, camera: str) -> Path | None:
        return read_pointer(self.folder(camera), CURRENT)

    def previous(self, camera: str) -> Path | None:
        return read_pointer(self.folder(camera), PREVIOUS)

    def history(self, camera: str) -> list[dict[str, Any]]:
        path = self.folder(camera) / HISTORY
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def cameras(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if (p / HISTORY).is_file()) if self.root.is_dir() else []

    def for_model(self, camera: str, model_sha256: str) -> Path | None:
        """The version that was last current for this model (None if the store never held one)."""
        for entry in reversed(self.history(camera)):
            if entry["model_sha256"] == model_sha256 and (self.folder(camera) / entry["version"]).is_dir():
                return self.folder(camera) / str(entry["version"])
        return None

    @staticmethod
    def model_sha_of(version: Path) -> str:
        return str(yaml.safe_load((Path(version) / FILE).read_text())["bundle"]["model_sha256"])

    def load(self, version: Path, bundle: Bundle) -> CameraCalibration:
        return load_calibration(Path(version) / FILE, bundle)

    # ---- writing -------------------------------------------------------------------------------------
    def add(self, camera: str, data: dict[str, Any], aoi_bytes: bytes | None, bundle: Bundle | None) -> Path:
        """Check a calibration (against `bundle` when given) and keep it as a new version; returns its folder.
        Refused (CalibrationError) before anything is kept; the same content again reuses its version."""
        text, sha12 = stored_form(data, aoi_bytes)
        self.folder(camera).mkdir(parents=True, exist_ok=True)
        existing = sorted(p for p in self.folder(camera).glob(f"*-{sha12}") if p.is_dir())
        if existing:
            if bundle is not None:
                self.load(existing[0], bundle)
            return existing[0]
        staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.folder(camera)))
        try:
            if aoi_bytes is not None:
                (staging / AOI).write_bytes(aoi_bytes)
            (staging / FILE).write_text(text)
            made_for = (data.get("bundle") or {}).get("model_sha256") if isinstance(data.get("bundle"), dict) else None
            if not isinstance(made_for, str):
                raise CalibrationError(f"calibration for camera {camera!r}: key 'bundle.model_sha256' is missing")
            if bundle is not None:
                load_calibration(staging / FILE, bundle)  # every check, on the staged copy
            number = 1 + sum(1 for p in self.folder(camera).iterdir() if p.is_dir() and not p.name.startswith("."))
            target = self.folder(camera) / f"{number:04d}-{sha12}"
            os.replace(staging, target)
            return target
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def seed(self, camera: str, path: Path | None) -> Path | None:
        """Copy the engineer's calibration file (read only, never written) in as the first version, once."""
        if self.history(camera) or path is None or not Path(path).is_file():
            return None
        data = yaml.safe_load(Path(path).read_text())
        aoi = data.get("aoi") if isinstance(data, dict) else None
        aoi_bytes = None
        if aoi:
            aoi_path = Path(aoi) if Path(aoi).is_absolute() else Path(path).parent / aoi
            aoi_bytes = aoi_path.read_bytes()
        version = self.add(camera, data, aoi_bytes, None)
        self.make_current(camera, version, "seed", source=str(path))
        return version

    def make_current(self, camera: str, version: Path, action: str, source: str | None = None) -> None:
        """`version` becomes current, the one current until now becomes previous; one history line."""
        version = Path(version)
        current = self.current(camera)
        if current is not None and current.name == version.name:
            return
        if current is not None:
            write_pointer(self.folder(camera), PREVIOUS, current)
        write_pointer(self.folder(camera), CURRENT, version)
        entry = {
            "version": version.name,
            "model_sha256": self.model_sha_of(version),
            "installed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "action": action,
        }
        if source:
            entry["source"] = source
        with open(self.folder(camera) / HISTORY, "a") as history:
            history.write(json.dumps(entry) + "\n")
            history.flush()
            os.fsync(history.fileno())

    def rollback(self, camera: str, model_sha256: str) -> Path:
        """Back to the previous version; refused when there is none or it was made for another model."""
        previous = self.previous(camera)
        if previous is None or not previous.is_dir():
            raise CalibrationError(f"camera {camera!r}: no previous calibration to roll back to")
        made_for = self.model_sha_of(previous)
        if made_for != model_sha256:
            raise CalibrationError(
                f"camera {camera!r}: the previous calibration {previous.name} was made for model sha256 "
                f"{made_for[:12]}..., but the camera runs {model_sha256[:12]}..."
            )
        self.make_current(camera, previous, "rollback")
        return previous


def stored_form(data: dict[str, Any], aoi_bytes: bytes | None) -> tuple[str, str]:
    """The YAML text a version keeps and its sha12 (the end of its folder name): `onen fleet` predicts a
    pushed calibration's version name with it."""
    data = dict(data)
    if aoi_bytes is not None:
        data["aoi"] = AOI
    text = yaml.safe_dump(data, sort_keys=False)
    return text, hashlib.sha256(text.encode() + (aoi_bytes or b"")).hexdigest()[:12]


def calibration_store_of(config: StationConfig) -> CalibrationStore:
    """Where a station keeps pushed calibrations: updates.calibration_dir, else next to its spool."""
    if config.updates is not None:
        assert config.updates.calibration_dir is not None  # UpdatesConfig defaults it under updates.dir
        return CalibrationStore(config.updates.calibration_dir)
    return CalibrationStore(spool_file(config).parent / "calibrations")
