"""`onen bench resize` times both resizes per frame size and, given a data set, finds exactly the images whose
pixels the halvings change (those at least 4x the model input), which says whether old models need training again."""

from __future__ import annotations

import json

import cv2
import numpy as np

from onen.edge.cli import main as onen


def test_bench_resize_times_every_frame_size_and_finds_the_images_it_changes(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["image,label,class,mask,aoi,split"]
    for name, size, split in [("small.png", 120, "train"), ("large.png", 256, "train"), ("grey.png", 300, "test")]:
        shape = (size, size) if name == "grey.png" else (size, size, 3)
        cv2.imwrite(str(tmp_path / name), rng.integers(0, 256, shape, dtype=np.uint8))
        rows.append(f"{name},0,good,,,{split}")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "resize.json"
    code = onen(
        ["bench", "resize", "--calls", "2", "--data", str(tmp_path / "manifest.csv"), "--input", "32x32",
         "--json", str(out)]
    )  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert len(report["frames"]) == 16 and all(row["resize_to_input_ms"] > 0 for row in report["frames"])
    under_4x = [row for row in report["frames"] if row["frame"] == "512x512" and row["input"] == "224x224"]
    assert under_4x and all(row["mean_pixel_difference"] == 0 for row in under_4x)
    # 120 px is under 4x of 32 and keeps its pixels; 256 and 300 px are halved (noise: some pixel always moves)
    assert report["data"] | {"data": None} == {"data": None, "input": "32x32", "images": 3, "halved": 2,
                                               "other_pixels": 2}  # fmt: skip
