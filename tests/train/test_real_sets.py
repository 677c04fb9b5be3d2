"""The accuracy bench's fixed splits (benchmarks.real_sets) on small generated stand-ins with the real sets' layouts:
stratified, reproducible from the file list alone, written as manifests `onen train` reads with their split."""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from onen.benchmarks import real_sets
from onen.edge.cli import build_parser
from onen.edge.errors import DataError
from onen.train.data.readers import load_index
from onen.train.data.splits import stratified_split

# per (defect probability, cell type): how many cells the ELPV stand-in has
ELPV_PLAN = {("0.0", "mono"): 40, ("0.0", "poly"): 60, ("1.0", "mono"): 20, ("1.0", "poly"): 24}
ELPV_PLAN |= {("0.3333333333333333", "poly"): 8, ("0.6666666666666666", "mono"): 8}
MT_PLAN = {"MT_Free": 40, "MT_Crack": 12, "MT_Fray": 4}


def _image(path: Path, value: int, suffix: str = ".png") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path.with_suffix(suffix)), np.full((8, 8), value, np.uint8))
    return path.with_suffix(suffix)


def _elpv(root: Path) -> Path:
    """ELPV's layout: images/cellNNNN.png and a whitespace-separated labels.csv (path, probability, type)."""
    lines, number = [], 0
    for (probability, cell_type), count in ELPV_PLAN.items():
        for _ in range(count):
            number += 1
            _image(root / "images" / f"cell{number:04d}", number % 256)
            lines.append(f"images/cell{number:04d}.png  {probability:<20}{cell_type}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def _mt(root: Path) -> Path:
    """Magnetic tile's layout: MT_<class>/Imgs/<name>.jpg with its <name>.png mask beside it."""
    for folder, count in MT_PLAN.items():
        for i in range(count):
            _image(root / folder / "Imgs" / f"exp{i}_num_{i}", i, ".jpg")
            _image(root / folder / "Imgs" / f"exp{i}_num_{i}", 255 if folder != "MT_Free" else 0)
    return root


def _rows(manifest: Path) -> list[dict[str, str]]:
    with open(manifest, newline="") as handle:
        return list(csv.DictReader(handle))


def test_elpv_split_is_stratified_by_label_and_cell_type(tmp_path):
    split = real_sets.split_set("elpv", _elpv(tmp_path / "elpv"))
    assert split.class_names == ["good", "defective"]
    assert len(split.samples) == sum(ELPV_PLAN.values()) and len({s.image for s in split.samples}) == len(split.samples)
    types = {line.split()[0]: line.split()[2] for line in (tmp_path / "elpv" / "labels.csv").read_text().splitlines()}
    per_split = Counter((s.split, s.class_name, types[f"images/{s.image.name}"]) for s in split.samples)
    # 25 % test and 10 % val of every (probability, type) stratum; p >= 0.5 is defective
    assert per_split[("test", "good", "mono")] == 10 and per_split[("test", "good", "poly")] == 15 + 2
    assert per_split[("test", "defective", "mono")] == 5 + 2 and per_split[("test", "defective", "poly")] == 6
    assert per_split[("val", "good", "poly")] == 6 + 1 and per_split[("val", "defective", "mono")] == 2 + 1
    assert all(s.mask is None for s in split.samples)  # labels only: weak supervision at most


def test_manifest_is_read_back_by_onen_train_with_its_split(tmp_path):
    split = real_sets.split_set("elpv", _elpv(tmp_path / "elpv"))
    manifest = real_sets.write_manifest(split, tmp_path / "work" / "manifest.csv")
    assert list(_rows(manifest)[0]) == ["image", "label", "class", "mask", "aoi", "split"]
    index = load_index(manifest)
    assert index.class_names == ["good", "defective"]
    kept = stratified_split(index, 0.25, 0.1, seed=5)  # what the trainer does: the manifest's split wins
    assert kept.meta["fixed_by_source"] == len(split.samples)
    assert kept.counts() == split.counts()
    assert real_sets.fingerprint(split.root, index.samples) == split.fingerprint


def test_split_and_fingerprint_depend_only_on_the_file_list(tmp_path):
    first = real_sets.split_set("elpv", _elpv(tmp_path / "a"))
    shutil.copytree(tmp_path / "a", tmp_path / "elsewhere" / "b")
    moved = real_sets.split_set("elpv", tmp_path / "elsewhere" / "b")
    assert moved.fingerprint == first.fingerprint  # same files, other folder: same split
    assert [(s.image.name, s.split) for s in moved.samples] == [(s.image.name, s.split) for s in first.samples]
    labels = tmp_path / "a" / "labels.csv"
    labels.write_text("".join(labels.read_text().splitlines(keepends=True)[1:]))  # one cell less
    assert real_sets.split_set("elpv", tmp_path / "a").fingerprint != first.fingerprint
    assert first.pinned() == real_sets.PINNED["elpv"] != first.fingerprint  # a stand-in is not the real set


def test_magnetic_tile_split_is_stratified_by_class_and_keeps_the_masks(tmp_path):
    split = real_sets.split_set("mt", _mt(tmp_path / "mt"))
    assert split.class_names == ["good", "crack", "fray"]
    counts = split.counts()
    assert counts["test"] == {"good": 10, "crack": 3, "fray": 1}
    assert counts["val"] == {"good": 4, "crack": 1, "fray": 1}
    manifest = real_sets.write_manifest(split, tmp_path / "work" / "mt.csv")
    rows = _rows(manifest)
    assert all(r["mask"] == r["image"][: -len(".jpg")] + ".png" for r in rows)  # good tiles have (empty) masks too
    assert {(s.image, s.mask, s.split) for s in load_index(manifest).samples} == {
        (s.image, s.mask, s.split) for s in split.samples
    }


def test_limit_keeps_a_stratified_subset_of_every_split(tmp_path):
    full = real_sets.split_set("elpv", _elpv(tmp_path / "elpv"))
    small = real_sets.split_set("elpv", tmp_path / "elpv", limit=20)
    counts = small.counts()
    assert 18 <= sum(counts["train"].values()) <= 22 and set(counts["train"]) == {"good", "defective"}
    assert counts["val"] == full.counts()["val"]  # a split already under the limit stays whole
    test_images = {s.image for s in full.samples if s.split == "test"}
    assert {s.image for s in small.samples if s.split == "test"} <= test_images
    assert small.fingerprint != full.fingerprint


def test_a_bad_labels_line_names_the_file_and_line(tmp_path):
    root = _elpv(tmp_path / "elpv")
    labels = root / "labels.csv"
    lines = labels.read_text().splitlines()
    lines[2] = "images/cell0003.png  maybe  mono"
    labels.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"labels.csv:3: defect probability must be a number, got 'maybe'"):
        real_sets.split_set("elpv", root)
    lines[2] = "images/cell9999.png  1.0  mono"
    labels.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"labels.csv:3: image file .*cell9999.png does not exist"):
        real_sets.split_set("elpv", root)


def test_onen_bench_runs_accuracy_and_not_the_split_helper(capsys):
    from onen.benchmarks import accuracy

    parser = build_parser()
    args = parser.parse_args(["bench", "accuracy", "--work", "w", "--sets", "elpv", "--limit", "200"])
    assert args.handler is accuracy.main and args.limit == 200 and args.epochs is None
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "real-sets"])
    assert "invalid choice: 'real-sets'" in capsys.readouterr().err
