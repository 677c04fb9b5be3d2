"""The defect archive read-only (layout of edge.archive), and the operators' marks stored beside it.

An entry id is "<camera>/<day>/<time>_<seq>", checked against a strict pattern before it touches the
disk, so no request can reach outside the archive. Marks ("confirmed" / "false reject") are appended to
`<archive>.marks.jsonl` next to the archive folder (not inside it: the archive's size cap deletes its
oldest files); the latest mark of an entry wins. They never change a published verdict.
"""

from __future__ import annotations

import csv
import io
import json
import re
import threading
import time
from pathlib import Path
from typing import Any

ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+/\d{4}-\d{2}-\d{2}/\d{6}_\d{8}$")
MARKS = ("confirmed", "false reject")
FILES = {"frame": "_frame.png", "overlay": "_overlay.jpg", "result": "_result.json"}
PAGE_SIZE = 24


class ArchiveView:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.marks_path = self.path.parent / f"{self.path.name}.marks.jsonl"
        self._lock = threading.Lock()

    def file(self, entry_id: str, kind: str) -> Path | None:
        if not ID_PATTERN.match(entry_id) or kind not in FILES or ".." in entry_id:
            return None
        path = self.path / f"{entry_id}{FILES[kind]}"
        return path if path.is_file() else None

    def _entries(self) -> list[dict[str, Any]]:
        entries = []
        for result_file in self.path.glob("*/*/*_result.json"):
            entry_id = result_file.relative_to(self.path).as_posix()[: -len(FILES["result"])]
            if not ID_PATTERN.match(entry_id):
                continue
            try:
                result = json.loads(result_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # being written or removed by the cap right now
            entries.append({"id": entry_id, "result": result})
        entries.sort(key=lambda e: e["result"].get("captured_at_epoch") or 0, reverse=True)
        return entries

    def list(
        self,
        camera: str = "",
        class_name: str = "",
        since: float | None = None,
        until: float | None = None,
        page: int = 0,
    ) -> dict[str, Any]:
        """Newest first, filtered, one page; with the filter choices found in the whole archive."""
        entries = self._entries()
        marks = self.marks()
        cameras = sorted({e["result"].get("camera", "") for e in entries})
        classes = sorted({(e["result"].get("class") or {}).get("name") or "" for e in entries})
        chosen = [
            e
            for e in entries
            if (not camera or e["result"].get("camera") == camera)
            and (not class_name or (e["result"].get("class") or {}).get("name") == class_name)
            and (since is None or (e["result"].get("captured_at_epoch") or 0) >= since)
            and (until is None or (e["result"].get("captured_at_epoch") or 0) <= until)
        ]
        page = max(0, page)
        items = [_item(e, marks.get(e["id"])) for e in chosen[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]]
        return {
            "items": items,
            "total": len(chosen),
            "page": page,
            "pages": max(1, -(-len(chosen) // PAGE_SIZE)),
            "cameras": cameras,
            "classes": classes,
        }

    def detail(self, entry_id: str) -> dict[str, Any] | None:
        result_file = self.file(entry_id, "result")
        if result_file is None:
            return None
        result = json.loads(result_file.read_text(encoding="utf-8"))
        return {
            **_item({"id": entry_id, "result": result}, self.marks().get(entry_id)),
            "result": result,
            "has_frame": self.file(entry_id, "frame") is not None,
            "has_overlay": self.file(entry_id, "overlay") is not None,
        }

    # ---- marks ------------------------------------------------------------------------------
    def mark(self, entry_id: str, mark: str) -> dict[str, Any]:
        detail = self.detail(entry_id)
        if detail is None:
            raise KeyError(entry_id)
        if mark not in MARKS:
            raise ValueError(f"mark must be one of {', '.join(MARKS)}, got {mark!r}")
        result = detail["result"]
        record = {
            "id": entry_id,
            "mark": mark,
            "marked_at": time.time(),
            "station": result.get("station"),
            "camera": result.get("camera"),
            "seq": result.get("seq"),
            "run_id": result.get("run_id"),
            "captured_at": result.get("captured_at"),
            "verdict": result.get("verdict"),
            "score": result.get("score"),
            "raw_score": result.get("raw_score"),
            "threshold": result.get("threshold"),
            "class": (result.get("class") or {}).get("name"),
            "model_version": (result.get("model") or {}).get("version"),
        }
        with self._lock, self.marks_path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
        return record

    def marks(self) -> dict[str, dict[str, Any]]:
        if not self.marks_path.exists():
            return {}
        latest = {}
        with self._lock:
            lines = self.marks_path.read_text(encoding="utf-8").splitlines()
        for line in lines:
            try:
                record = json.loads(line)
                latest[record["id"]] = record
            except (ValueError, KeyError, TypeError):
                continue
        return latest

    def marks_csv(self) -> str:
        columns = [
            "id",
            "mark",
            "marked_at",
            "station",
            "camera",
            "seq",
            "run_id",
            "captured_at",
            "verdict",
            "score",
            "raw_score",
            "threshold",
            "class",
            "model_version",
        ]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for record in self.marks().values():
            writer.writerow(record)
        return out.getvalue()


def _item(entry: dict[str, Any], mark: dict[str, Any] | None) -> dict[str, Any]:
    result = entry["result"]
    return {
        "id": entry["id"],
        "camera": result.get("camera"),
        "seq": result.get("seq"),
        "captured_at": result.get("captured_at"),
        "captured_at_epoch": result.get("captured_at_epoch"),
        "score": result.get("score"),
        "threshold": result.get("threshold"),
        "class": (result.get("class") or {}).get("name"),
        "regions": result.get("regions") or [],
        "frame_size": result.get("frame"),
        "mark": mark["mark"] if mark else None,
    }
