"""A manifest whose `split` column has only train/test rows gets a validation split carved from its training rows,
per class and seeded, and the split says so; its test rows are never touched."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from onen.train.data.readers import load_index
from onen.train.data.splits import Splits, stratified_split
from onen.train.tiny_data import write_tiny_dataset


def _train_test_manifest(folder: Path) -> Path:
    """The tiny set with every fourth row fixed to test and the others to train (no validation rows)."""
    path = write_tiny_dataset(folder, seed=5, count=64, size=32)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for number, row in enumerate(rows):
        row["split"] = "test" if number % 4 == 0 else "train"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_validation_is_carved_from_training_rows(tmp_path, caplog):
    index = load_index(_train_test_manifest(tmp_path / "data"))
    fixed_test = {s.image for s in index.samples if s.split == "test"}
    fixed_train = [s for s in index.samples if s.split == "train"]
    with caplog.at_level(logging.INFO, logger="onen.train.data.splits"):
        splits = stratified_split(index, test_fraction=0.25, val_fraction=0.2, seed=3)
    assert {s.image for s in splits.test} == fixed_test  # the source's test rows stay exactly as they were
    train_per_class: dict[str, int] = {}
    for sample in fixed_train:
        train_per_class[sample.class_name] = train_per_class.get(sample.class_name, 0) + 1
    expected = {name: max(1, round(0.2 * count)) for name, count in train_per_class.items()}
    assert splits.counts()["val"] == expected
    assert splits.meta["val_carved_from_train"] == expected
    assert {s.image for s in splits.val} <= {s.image for s in fixed_train}
    assert not {s.image for s in splits.val} & {s.image for s in splits.train}
    assert len(splits.train) + len(splits.val) == len(fixed_train)
    assert any("carved" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)

    again = stratified_split(index.with_samples(list(reversed(index.samples))), 0.25, 0.2, seed=3)
    other = stratified_split(index, 0.25, 0.2, seed=4)
    assert sorted(s.image for s in again.val) == sorted(s.image for s in splits.val)  # seeded, order-free
    assert sorted(s.image for s in other.val) != sorted(s.image for s in splits.val)

    loaded = Splits.load(splits.save(tmp_path / "splits.json", index), index)
    assert loaded.meta["val_carved_from_train"] == expected
    assert [s.image for s in loaded.val] == [s.image for s in splits.val]


def test_source_validation_rows_are_kept_and_nothing_is_carved(tmp_path):
    path = _train_test_manifest(tmp_path / "data")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows[1]["split"] = rows[2]["split"] = "val"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    index = load_index(path)
    splits = stratified_split(index, test_fraction=0.25, val_fraction=0.2, seed=3)
    assert len(splits.val) == 2 and "val_carved_from_train" not in splits.meta
