"""The defect archive: frame PNG + overlay JPEG + result JSON per defect, oldest removed at the size cap."""

from __future__ import annotations

import json
import os
import time

import cv2
import numpy as np

from onen.edge.archive import Archive
from onen.edge.overlay import encode_jpeg, render_overlay
from onen.edge.regions import Region


def _defect(seq: int):
    rng = np.random.default_rng(seq)
    frame = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)  # noise: PNG cannot shrink it much
    heat = np.zeros((32, 32), np.float32)
    heat[8:16, 8:16] = 0.9
    overlay = encode_jpeg(render_overlay(frame, heat, [Region([24, 24, 32, 24], 768, 0.9)]), 80)
    return frame, overlay, {"seq": seq, "captured_at_epoch": time.time(), "verdict": "defect"}


def test_archive_writes_reviewable_files(tmp_path):
    archive = Archive(tmp_path / "archive", max_mb=10)
    frame, overlay, result = _defect(1)
    folder = archive.save("top cam", 1, frame, overlay, result)
    files = sorted(p.name for p in folder.iterdir())
    assert len(files) == 3 and folder.parent.name == "top_cam"
    png = next(folder.glob("*_frame.png"))
    assert np.array_equal(cv2.cvtColor(cv2.imread(str(png)), cv2.COLOR_BGR2RGB), frame), "lossless frame, RGB kept"
    assert cv2.imread(str(next(folder.glob("*_overlay.jpg")))).shape == (96, 128, 3)
    assert json.loads(next(folder.glob("*_result.json")).read_text())["seq"] == 1


def test_archive_cap_removes_the_oldest_first(tmp_path):
    one = sum(len(x) for x in (cv2.imencode(".png", _defect(0)[0])[1].tobytes(), _defect(0)[1])) + 100
    archive = Archive(tmp_path / "archive", max_mb=3.5 * one / (1024 * 1024))  # room for about three defects
    for seq in range(8):
        frame, overlay, result = _defect(seq)
        archive.save("cam", seq, frame, overlay, result)
    kept = sorted(int(p.name.split("_")[1]) for p in (tmp_path / "archive").rglob("*_frame.png"))
    assert kept == sorted(kept) and kept[-1] == 7 and 2 <= len(kept) <= 4 and 0 not in kept
    total = sum(p.stat().st_size for p in (tmp_path / "archive").rglob("*") if p.is_file())
    assert total <= archive.max_bytes and archive.removed > 0


def test_archive_counts_what_was_there_before(tmp_path):
    first = Archive(tmp_path / "archive", max_mb=10)
    for seq in range(3):
        first.save("cam", seq, *_defect(seq))
    before = sum(p.stat().st_size for p in (tmp_path / "archive").rglob("*") if p.is_file())
    reopened = Archive(tmp_path / "archive", max_mb=10)
    reopened.save("cam", 3, *_defect(3))
    assert reopened.size_bytes > before, "a restarted daemon counts the files already archived"
    assert os.path.isdir(tmp_path / "archive" / "cam")
