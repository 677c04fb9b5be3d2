"""The two real data sets of `onen bench accuracy`, each with one fixed, stratified train/val/test split.

- elpv: ELPV solar cells (`labels.csv`: path, defect probability in {0, 1/3, 2/3, 1}, mono/poly); p >= 0.5 is
  defective, class `defective` (one defect class, labels only: no masks). Stratified by probability and cell type,
  so both labels and both types (and the doubtful 1/3 and 2/3 cells) are spread alike over the splits.
- mt: magnetic tile (class folders MT_*/Imgs with masks beside the images), stratified by class.

The split is a pure function of the set's file list and SPLIT_SEED (train.data.splits.stratified_split, per
stratum), written as a CSV manifest with a `split` column outside the repository. Its fingerprint (sha256 of the
sorted `relative path<TAB>split` lines) is printed with every figure and compared with the one pinned below, so
everyone measures on the same held-out test rows.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

from onen.edge.errors import DataError
from onen.train.data.readers import CSV_COLUMNS, IMAGE_SUFFIXES, read_class_folders
from onen.train.data.sample import GOOD, SPLITS, DataIndex, Sample
from onen.train.data.splits import stratified_split

SETS = ("elpv", "mt")
SPLIT_SEED = 0
TEST_FRACTION = 0.25
VAL_FRACTION = 0.1
ELPV_LABELS = "labels.csv"
ELPV_DEFECT = "defective"
ELPV_TYPES = ("mono", "poly")
# The full sets' fingerprints (no --limit), as computed from elpv-dataset 1.0.0.post1 and the magnetic tile folder.
PINNED = {
    "elpv": "02f9a67c7150b301cdce48685e3b6349ae70263096826f5009947f800bebd124",
    "mt": "15ceae1a38cb73e79d4d5fbd65753188f223bc3fc78c15d8ecac4021e77e2ea0",
}


@dataclass(frozen=True)
class SplitSet:
    """One set's samples, each with its split, and the split's fingerprint."""

    name: str
    root: Path
    samples: list[Sample]
    class_names: list[str]
    fingerprint: str

    def counts(self) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {name: {} for name in SPLITS}
        for sample in self.samples:
            per_class = result[sample.split or "train"]
            per_class[sample.class_name] = per_class.get(sample.class_name, 0) + 1
        return result

    def pinned(self) -> str | None:
        """The fingerprint everyone's figures were measured on (None: not pinned, e.g. a --limit subset)."""
        return PINNED.get(self.name) or None


def read_elpv(root: Path) -> tuple[list[Sample], dict[Path, str]]:
    """ELPV's labels.csv as samples (p >= 0.5: defective) and each image's stratum (probability/type)."""
    labels = root / ELPV_LABELS
    if not labels.is_file():
        raise DataError(f"{root}: no {ELPV_LABELS} (expected the ELPV data folder: images/ and labels.csv)")
    samples, strata = [], {}
    for number, line in enumerate(labels.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        where = f"{labels}:{number}"
        if len(fields) != 3:
            raise DataError(f"{where}: expected 3 fields (path, defect probability, mono/poly), got {len(fields)}")
        path, probability_text, cell_type = fields
        try:
            probability = float(probability_text)
        except ValueError:
            raise DataError(f"{where}: defect probability must be a number, got '{probability_text}'") from None
        if not 0 <= probability <= 1:
            raise DataError(f"{where}: defect probability must be within [0, 1], got {probability}")
        if cell_type not in ELPV_TYPES:
            raise DataError(f"{where}: cell type must be one of {'/'.join(ELPV_TYPES)}, got '{cell_type}'")
        image = root / path
        if not image.is_file() or image.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"{where}: image file {image} does not exist")
        defective = probability >= 0.5
        samples.append(Sample(image, int(defective), ELPV_DEFECT if defective else GOOD))
        strata[image] = f"p{round(probability * 3)}/{cell_type}"
    if not samples:
        raise DataError(f"{labels}: lists no images")
    return samples, strata


def read_mt(root: Path) -> tuple[list[Sample], dict[Path, str]]:
    """Magnetic tile's class folders (masks beside the images) as samples, stratified by class."""
    index = read_class_folders(root)
    return list(index.samples), {s.image: s.class_name for s in index.samples}


READERS = {"elpv": read_elpv, "mt": read_mt}


def _stratified(samples: list[Sample], strata: dict[Path, str], test: float, val: float, seed: int) -> list[Sample]:
    """train.data.splits.stratified_split with each image's stratum standing in for its class."""
    by_image = {s.image: s for s in samples}
    keyed = [dataclasses.replace(s, class_name=strata[s.image], split=None) for s in samples]
    keyed_index = DataIndex(keyed, sorted({strata[s.image] for s in samples}), Path("."))
    splits = stratified_split(keyed_index, test_fraction=test, val_fraction=val, seed=seed, keep_source_split=False)
    return [dataclasses.replace(by_image[s.image], split=name) for name in SPLITS for s in splits[name]]


def _limited(samples: list[Sample], strata: dict[Path, str], limit: int) -> list[Sample]:
    """About `limit` images per split (rounded per stratum), stratified like the split itself (a smoke-run subset)."""
    kept = []
    for name in SPLITS:
        members = [s for s in samples if s.split == name]
        if len(members) <= limit:
            kept += members
            continue
        share = _stratified(members, strata, limit / len(members), 0.0, SPLIT_SEED)
        kept += [dataclasses.replace(s, split=name) for s in share if s.split == "test"]
    return kept


def fingerprint(root: Path, samples: list[Sample]) -> str:
    """sha256 of the sorted `path relative to the set's folder<TAB>split` lines: the same on any machine."""
    lines = sorted(f"{s.image.relative_to(root).as_posix()}\t{s.split}" for s in samples)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def split_set(name: str, root: str | Path, limit: int | None = None) -> SplitSet:
    """The fixed split of set `name` read from `root` (optionally at most `limit` images per split)."""
    if name not in READERS:
        raise DataError(f"unknown data set '{name}'; choose from {', '.join(SETS)}")
    root = Path(root).resolve()
    if not root.is_dir():
        raise DataError(f"{root}: the {name} data folder does not exist")
    samples, strata = READERS[name](root)
    split = _stratified(samples, strata, TEST_FRACTION, VAL_FRACTION, SPLIT_SEED)
    if limit is not None:
        if limit < 1:
            raise DataError(f"limit must be >= 1 image per split, got {limit}")
        split = _limited(split, strata, limit)
    split.sort(key=lambda s: str(s.image))
    classes = [GOOD] + sorted({s.class_name for s in split if s.label == 1})
    return SplitSet(name, root, split, classes, fingerprint(root, split))


def write_manifest(split: SplitSet, path: str | Path) -> Path:
    """The split as a CSV manifest (image,label,class,mask,aoi,split; absolute paths) that `onen train` reads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for s in split.samples:
            writer.writerow([s.image, s.label, s.class_name, s.mask or "", s.aoi or "", s.split])
    tmp.replace(path)
    return path
