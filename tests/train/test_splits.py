"""Stratified splits: reproducible, per class, saved and loaded, and a source's own split wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from onen.edge.errors import DataError
from onen.train.data.sample import DataIndex, Sample
from onen.train.data.splits import Splits, stratified_split


def _index(tmp_path: Path, counts: dict[str, int], fixed: dict[str, str] | None = None) -> DataIndex:
    samples = []
    for class_name, count in counts.items():
        for i in range(count):
            name = f"{class_name}_{i:03d}.png"
            samples.append(
                Sample(tmp_path / name, 0 if class_name == "good" else 1, class_name, split=(fixed or {}).get(name))
            )
    return DataIndex(samples, ["good"] + [c for c in counts if c != "good"], tmp_path)


def test_split_is_stratified_and_reproducible(tmp_path):
    index = _index(tmp_path, {"good": 100, "crack": 40, "fray": 8, "rare": 2})
    first = stratified_split(index, test_fraction=0.25, val_fraction=0.1, seed=7)
    again = stratified_split(
        index.with_samples(list(reversed(index.samples))), test_fraction=0.25, val_fraction=0.1, seed=7
    )
    other = stratified_split(index, test_fraction=0.25, val_fraction=0.1, seed=8)
    assert [s.image for s in first.test] == [s.image for s in again.test]  # input order does not matter
    assert {s.image for s in first.test} != {s.image for s in other.test}
    counts = first.counts()
    assert counts["test"] == {"good": 25, "crack": 10, "fray": 2, "rare": 1}
    assert counts["val"] == {"good": 10, "crack": 4, "fray": 1}
    assert counts["train"] == {"good": 65, "crack": 26, "fray": 5, "rare": 1}
    names = [set(s.image for s in first[part]) for part in ("train", "val", "test")]
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])
    assert sum(len(n) for n in names) == len(index.samples)


def test_split_saved_and_loaded(tmp_path):
    index = _index(tmp_path, {"good": 20, "spot": 8})
    splits = stratified_split(index, seed=1)
    path = splits.save(tmp_path / "run" / "splits.json", index)
    loaded = Splits.load(path, index)
    assert [s.image for s in loaded.test] == [s.image for s in splits.test]
    assert loaded.meta["seed"] == 1
    smaller = index.with_samples([s for s in index.samples if s not in splits.test[:1]])
    with pytest.raises(DataError, match=r"splits.json.*not in the data set"):
        Splits.load(path, smaller)


def test_source_split_wins(tmp_path):
    fixed = {"good_000.png": "test", "good_001.png": "train", "crack_000.png": "val"}
    index = _index(tmp_path, {"good": 12, "crack": 4}, fixed)
    splits = stratified_split(index, test_fraction=0.25, seed=0)
    by_name = {s.image.name: part for part in ("train", "val", "test") for s in splits[part]}
    assert (
        by_name["good_000.png"] == "test" and by_name["good_001.png"] == "train" and by_name["crack_000.png"] == "val"
    )
    assert splits.meta["fixed_by_source"] == 3
    ignored = stratified_split(index, test_fraction=0.25, seed=0, keep_source_split=False)
    assert ignored.counts()["val"] == {}


def test_magnetic_tile_split(magnetic_tile_dir):
    from onen.train.data.readers import load_index

    splits = stratified_split(load_index(magnetic_tile_dir), test_fraction=0.25, seed=0)
    assert splits.counts()["test"] == {"good": 238, "blowhole": 29, "break": 21, "crack": 14, "fray": 8, "uneven": 26}
