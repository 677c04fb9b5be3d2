"""Reproducible stratified train/val/test splits, saved as JSON with every run.

Each class is split on its own (so a rare class like the 32 'fray' tiles still lands in test), from a
seed and the sorted file list, so the same data and seed give the same split on any machine. A split
fixed by the source (CSV `split` column, MVTec folders) always wins over the random one; when that source has no
validation rows, a stratified validation split is carved from its training rows (thresholds and the best
checkpoint are chosen on validation, never on test), and `meta["val_carved_from_train"]` says how many per class.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onen.edge.errors import DataError
from onen.train.data.sample import SPLITS, DataIndex, Sample

log = logging.getLogger(__name__)
FORMAT = "onen-splits/1"


@dataclass
class Splits:
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    meta: dict = field(default_factory=dict)  # seed, fractions, per-split class counts

    def __getitem__(self, name: str) -> list[Sample]:
        if name not in SPLITS:
            raise KeyError(f"unknown split '{name}'; expected one of {SPLITS}")
        return getattr(self, name)

    def counts(self) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {}
        for name in SPLITS:
            per_class: dict[str, int] = {}
            for sample in self[name]:
                per_class[sample.class_name] = per_class.get(sample.class_name, 0) + 1
            result[name] = per_class
        return result

    def save(self, path: str | Path, index: DataIndex | None = None) -> Path:
        """Write the split as JSON: image paths (relative to the data set when possible) per split."""
        path = Path(path)
        base = _base_dir(index.source) if index is not None else None
        data = {
            "format": FORMAT,
            "source": str(index.source) if index is not None else None,
            "meta": self.meta,
            "counts": self.counts(),
            **{name: [_relative(s.image, base) for s in self[name]] for name in SPLITS},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path, index: DataIndex) -> Splits:
        """Map a saved split back onto the samples of `index`; an image the index lacks is an error."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise DataError(f"{path}: cannot read the split file: {error}") from error
        if data.get("format") != FORMAT:
            raise DataError(f"{path}: not a split file (format '{data.get('format')}', expected '{FORMAT}')")
        base = _base_dir(index.source)
        by_key = {_relative(s.image, base): s for s in index.samples}
        parts: dict[str, list[Sample]] = {}
        for name in SPLITS:
            if name not in data:
                raise DataError(f"{path}: missing key '{name}'")
            missing = [key for key in data[name] if key not in by_key]
            if missing:
                raise DataError(
                    f"{path}: {len(missing)} image(s) of split '{name}' are not in the data set {index.source}, e.g. "
                    f"{missing[0]}"
                )
            parts[name] = [by_key[key] for key in data[name]]
        return cls(parts["train"], parts["val"], parts["test"], data.get("meta", {}))


def _base_dir(source: Path) -> Path:
    return source.parent if source.is_file() else source


def _relative(image: Path, base: Path | None) -> str:
    if base is not None:
        try:
            return image.resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            pass
    return str(image)


def _class_counts(n: int, test_fraction: float, val_fraction: float) -> tuple[int, int]:
    """How many of a class go to test and val: rounded, at least one each when the class has room."""
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    if test_fraction > 0 and n_test == 0 and n >= 2:
        n_test = 1
    if val_fraction > 0 and n_val == 0 and n - n_test >= 2:
        n_val = 1
    while n_test + n_val >= n and n > 0:  # keep at least one image of every class for training
        if n_val > 0:
            n_val -= 1
        elif n_test > 0:
            n_test -= 1
        else:
            break
    return n_test, n_val


def stratified_split(
    index: DataIndex,
    test_fraction: float = 0.25,
    val_fraction: float = 0.0,
    seed: int = 0,
    keep_source_split: bool = True,
) -> Splits:
    """Split per class; samples whose source fixes a split keep it (unless keep_source_split=False). A source split
    without validation rows gets `val_fraction` of its training rows per class as validation."""
    if not 0 <= test_fraction < 1 or not 0 <= val_fraction < 1 or test_fraction + val_fraction >= 1:
        raise ValueError(f"fractions must be in [0, 1) and sum below 1, got test={test_fraction} val={val_fraction}")
    parts: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    free: dict[str, list[Sample]] = {}
    for sample in index.samples:
        if keep_source_split and sample.split is not None:
            parts[sample.split].append(sample)
        else:
            free.setdefault(sample.class_name, []).append(sample)
    fixed = sum(len(members) for members in parts.values())
    carved: dict[str, int] = {}
    if fixed and not parts["val"] and val_fraction > 0:
        parts["train"], carved_val = _carve_validation(parts["train"], val_fraction, seed)
        parts["val"] += carved_val
        carved = {name: len(members) for name, members in _by_class(carved_val).items()}
        log.info(
            "%s: the source fixes no validation rows; carved %d of its %d training images as validation "
            "(%s of each class, seed %d): %s",
            index.source,
            len(carved_val),
            len(parts["train"]) + len(carved_val),
            val_fraction,
            seed,
            carved,
        )
    rng = np.random.default_rng(seed)
    for class_name in sorted(free):
        members = sorted(free[class_name], key=lambda s: str(s.image))
        order = rng.permutation(len(members))
        n_test, n_val = _class_counts(len(members), test_fraction, val_fraction)
        parts["test"] += [members[i] for i in order[:n_test]]
        parts["val"] += [members[i] for i in order[n_test : n_test + n_val]]
        parts["train"] += [members[i] for i in order[n_test + n_val :]]
    meta: dict = {
        "seed": seed,
        "test_fraction": test_fraction,
        "val_fraction": val_fraction,
        "fixed_by_source": fixed,
    }
    if carved:
        meta["val_carved_from_train"] = carved
    return Splits(parts["train"], parts["val"], parts["test"], meta)


def _by_class(samples: list[Sample]) -> dict[str, list[Sample]]:
    groups: dict[str, list[Sample]] = {}
    for sample in samples:
        groups.setdefault(sample.class_name, []).append(sample)
    return dict(sorted(groups.items()))


def _carve_validation(train: list[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """(train kept, validation) from fixed training rows: per class, `val_fraction` of them (at least one when the
    class has two or more), from a stream of its own so the free samples' split stays what it was."""
    rng = np.random.default_rng([seed, 1])
    kept: list[Sample] = []
    val: list[Sample] = []
    for members in _by_class(train).values():
        members = sorted(members, key=lambda s: str(s.image))
        order = rng.permutation(len(members))
        _, n_val = _class_counts(len(members), 0.0, val_fraction)
        val += [members[i] for i in order[:n_val]]
        kept += [members[i] for i in order[n_val:]]
    return kept, val
