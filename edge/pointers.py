"""`current` / `previous` pointer files of the station's version stores (models and calibrations).

A pointer is a one-line text file naming a version folder: its name when it sits in the store's folder,
else its absolute path (a model served from the path the station YAML names). It is replaced atomically
(write beside, then rename), so a crash leaves the old pointer or the new one, never half of either.
"""

from __future__ import annotations

import os
from pathlib import Path

CURRENT, PREVIOUS = "current", "previous"


def read_pointer(folder: Path, pointer: str) -> Path | None:
    path = folder / pointer
    text = path.read_text().strip() if path.is_file() else ""
    return (folder / text) if text else None  # an absolute path stays absolute


def write_pointer(folder: Path, pointer: str, target: Path | None) -> None:
    path = folder / pointer
    if target is None:
        path.unlink(missing_ok=True)
        return
    target = Path(target)
    text = target.name if target.parent.resolve() == folder.resolve() else str(target.resolve())
    temporary = path.with_name(f".{pointer}.tmp")
    temporary.write_text(text + "\n")
    os.replace(temporary, path)
