"""Turn a data set on disk into a `DataIndex`, whatever its layout.

Three layouts are recognised (see `load_index`): the MVTec AD folders, class folders with masks beside
the images (the magnetic tile set), and a CSV manifest. Reading checks the structure up front (folders,
columns, labels, that every listed file exists); decoding every image is left to `validate(index)` and to
the data set, which both raise a DataError naming the file, so nothing bad is ever skipped silently.
"""

from __future__ import annotations

import csv
import difflib
from pathlib import Path

from onen.edge.errors import DataError
from onen.train.data.sample import GOOD, SPLITS, DataIndex, Sample
from onen.train.data.validation import validate  # noqa: F401  (re-exported: readers.validate(index))

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
GOOD_FOLDER_NAMES = ("good", "ok", "free", "normal", "no_defect", "nodefect")
MASK_FOLDER_NAMES = ("masks", "mask", "ground_truth", "gt")
CSV_COLUMNS = ("image", "label", "class", "mask", "aoi", "split")
CSV_REQUIRED = ("image", "label", "class")
MANIFEST_NAMES = ("manifest.csv", "index.csv", "labels.csv")


def load_index(path: str | Path, aoi: str | Path | None = None) -> DataIndex:
    """Read a data set: a CSV file, a folder holding a manifest CSV, an MVTec AD folder or class folders.

    `aoi` is one area-of-interest mask for the whole data set (any size; it is resized to the model input).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: data set does not exist (expected a folder or a CSV manifest)")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DataError(f"{path}: a data set file must be a CSV manifest with header {','.join(CSV_COLUMNS)}")
        index = read_csv_manifest(path)
    elif _is_mvtec(path):
        index = read_mvtec(path)
    elif manifest := _manifest_in(path):
        index = read_csv_manifest(manifest)
    else:
        index = read_class_folders(path)
    if aoi is not None:
        aoi = Path(aoi)
        if not aoi.is_file():
            raise DataError(f"{aoi}: AOI mask file does not exist")
        index.aoi = aoi
    return index


# ---------------------------------------------------------------------------------------------- MVTec AD
def _is_mvtec(path: Path) -> bool:
    return (path / "train" / GOOD).is_dir() and (path / "test").is_dir()


def _images_in(folder: Path, recursive: bool = False) -> list[Path]:
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in pattern if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_mvtec(root: Path) -> DataIndex:
    """MVTec AD: train/good, test/<type>, ground_truth/<type>/<stem>_mask.png. The folders fix the split."""
    samples: list[Sample] = []
    train_good = _images_in(root / "train" / GOOD)
    if not train_good:
        raise DataError(f"{root / 'train' / GOOD}: no images (empty class 'good' in the MVTec train folder)")
    samples += [Sample(p, 0, GOOD, split="train") for p in train_good]
    defect_types = sorted(d.name for d in (root / "test").iterdir() if d.is_dir())
    if not defect_types:
        raise DataError(f"{root / 'test'}: no class folders (expected test/good and test/<defect type>)")
    for name in defect_types:
        images = _images_in(root / "test" / name)
        if not images:
            raise DataError(f"{root / 'test' / name}: empty class folder '{name}'")
        for image in images:
            if name == GOOD:
                samples.append(Sample(image, 0, GOOD, split="test"))
                continue
            mask = root / "ground_truth" / name / f"{image.stem}_mask.png"
            if not mask.is_file():
                raise DataError(f"{mask}: missing ground-truth mask for {image}")
            samples.append(Sample(image, 1, name, mask=mask, split="test"))
    classes = [GOOD] + [n for n in defect_types if n != GOOD]
    return DataIndex(samples, classes, root, meta={"layout": "mvtec"})


# --------------------------------------------------------------------------------------- class folders
def _is_good_folder(name: str, prefix: str) -> bool:
    return name[len(prefix) :].lower() in GOOD_FOLDER_NAMES or name.lower() in GOOD_FOLDER_NAMES


def _common_prefix(names: list[str]) -> str:
    """A shared 'XX_' prefix such as the magnetic tile's 'MT_', stripped from the class names."""
    if len(names) < 2:
        return ""
    prefix = names[0].split("_")[0] + "_" if "_" in names[0] else ""
    return prefix if prefix and all(n.startswith(prefix) and len(n) > len(prefix) for n in names) else ""


def _split_images_and_masks(folder: Path) -> tuple[list[Path], dict[Path, Path]]:
    """Images of a class folder and their masks: `<stem>.png` beside a non-png image (magnetic tile),
    `<stem>_mask.*` beside it, or `<stem>.png` / `<stem>_mask.png` in a masks/ (ground_truth/) folder
    beside the image, one level up, or at the data set's top as masks/<class folder>/."""
    files = [
        p
        for p in _images_in(folder, recursive=True)
        if not set(p.parent.relative_to(folder).parts) & set(MASK_FOLDER_NAMES)
    ]
    by_stem = {(p.parent, p.stem): p for p in files if not p.stem.endswith("_mask")}
    non_png = {(p.parent, p.stem): p for p in files if p.suffix.lower() != ".png"}
    masks: dict[Path, Path] = {}
    for p in files:
        if p.stem.endswith("_mask"):
            owner = by_stem.get((p.parent, p.stem[: -len("_mask")]))
            if owner is None:
                raise DataError(f"{p}: mask without an image named {p.stem[: -len('_mask')]}.* beside it")
            masks[owner] = p
        elif p.suffix.lower() == ".png" and (p.parent, p.stem) in non_png:
            masks[non_png[(p.parent, p.stem)]] = p
    mask_files = set(masks.values())
    images = [p for p in files if p not in mask_files]
    for image in images:
        if image in masks:
            continue
        mask_dirs = [image.parent / n for n in MASK_FOLDER_NAMES] + [image.parent.parent / n for n in MASK_FOLDER_NAMES]
        mask_dirs += [folder.parent / n / folder.name / image.parent.relative_to(folder) for n in MASK_FOLDER_NAMES]
        for mask_dir in mask_dirs:
            found = next(
                (c for c in (mask_dir / f"{image.stem}.png", mask_dir / f"{image.stem}_mask.png") if c.is_file()), None
            )
            if found:
                masks[image] = found
                break
    return images, masks


def read_class_folders(root: Path) -> DataIndex:
    """One folder per class (good folder: good/ok/free, e.g. MT_Free), masks beside the images."""
    folders = sorted(
        d
        for d in root.iterdir()
        if d.is_dir() and not d.name.startswith(".") and d.name.lower() not in MASK_FOLDER_NAMES + ("aoi",)
    )
    if not folders:
        raise DataError(
            f"{root}: no class folders, no MVTec layout (train/good + test/) and no manifest CSV "
            f"({', '.join(MANIFEST_NAMES)}) found"
        )
    prefix = _common_prefix([d.name for d in folders])
    good_folders = [d for d in folders if _is_good_folder(d.name, prefix)]
    if len(good_folders) > 1:
        raise DataError(f"{root}: several folders look like the good class: {[d.name for d in good_folders]}; keep one")
    samples: list[Sample] = []
    defect_classes: list[str] = []
    for folder in folders:
        is_good = folder in good_folders
        name = GOOD if is_good else folder.name[len(prefix) :].lower()
        images, masks = _split_images_and_masks(folder)
        if not images:
            raise DataError(f"{folder}: empty class folder '{folder.name}' (no {'/'.join(IMAGE_SUFFIXES)} images)")
        if not is_good:
            if name in defect_classes or name == GOOD:
                raise DataError(f"{folder}: class name '{name}' given twice")
            defect_classes.append(name)
        for image in images:
            samples.append(Sample(image, 0 if is_good else 1, name, mask=masks.get(image)))
    if not good_folders:
        raise DataError(
            f"{root}: no folder of good parts (expected one named {'/'.join(GOOD_FOLDER_NAMES)}, optionally with a "
            "prefix like MT_Free)"
        )
    return DataIndex(samples, [GOOD] + defect_classes, root, meta={"layout": "class_folders", "folder_prefix": prefix})


# ------------------------------------------------------------------------------------------ CSV manifest
def _manifest_in(folder: Path) -> Path | None:
    for name in MANIFEST_NAMES:
        if (folder / name).is_file():
            return folder / name
    csvs = sorted(folder.glob("*.csv"))
    return csvs[0] if len(csvs) == 1 else None


def _check_header(path: Path, header: list[str]) -> None:
    missing = [c for c in CSV_REQUIRED if c not in header]
    for column in header:
        if column not in CSV_COLUMNS:
            close = difflib.get_close_matches(column, CSV_COLUMNS, n=1, cutoff=0.7)
            if close:
                raise DataError(
                    f"{path}: unknown column '{column}' (did you mean '{close[0]}'?); columns are "
                    f"{','.join(CSV_COLUMNS)}"
                )
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing}; the header must be {','.join(CSV_COLUMNS)} (mask, aoi, split may "
            "be empty)"
        )


def _existing(base: Path, value: str, what: str, where: str) -> Path | None:
    if not value:
        return None
    file_path = (base / value).resolve() if not Path(value).is_absolute() else Path(value)
    if not file_path.is_file():
        raise DataError(f"{where}: {what} file {file_path} does not exist")
    return file_path


def _parse_row(path: Path, line: int, row: dict[str, str]) -> Sample:
    where = f"{path}:{line}"
    value = {k: (row.get(k) or "").strip() for k in CSV_COLUMNS}
    if not value["image"]:
        raise DataError(f"{where}: empty 'image' column")
    if value["label"] not in ("0", "1"):
        raise DataError(f"{where}: label must be 0 (good) or 1 (defect), got '{value['label']}'")
    label = int(value["label"])
    class_name = value["class"] or (GOOD if label == 0 else "")
    if label == 1 and not class_name:
        raise DataError(f"{where}: label 1 (defect) needs a class name in the 'class' column")
    if label == 1 and class_name == GOOD:
        raise DataError(f"{where}: class 'good' contradicts label 1 (defect)")
    if label == 0 and class_name != GOOD:
        raise DataError(f"{where}: label 0 (good) contradicts class '{class_name}' (good parts have class 'good')")
    split = value["split"].lower() or None
    if split is not None and split not in SPLITS:
        raise DataError(f"{where}: split must be one of {'/'.join(SPLITS)} or empty, got '{value['split']}'")
    base = path.parent
    image = _existing(base, value["image"], "image", where)
    assert image is not None  # the 'image' column was checked non-empty above
    mask = _existing(base, value["mask"], "mask", where)
    aoi = _existing(base, value["aoi"], "AOI", where)
    return Sample(image, label, class_name, mask=mask, aoi=aoi, split=split)


def read_csv_manifest(path: Path) -> DataIndex:
    """CSV with header image,label,class,mask,aoi,split; paths are relative to the CSV file."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [h.strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            _check_header(path, header)
            samples = [_parse_row(path, number, row) for number, row in enumerate(reader, start=2)]
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not a UTF-8 text CSV ({error})") from error
    except csv.Error as error:
        raise DataError(f"{path}: malformed CSV: {error}") from error
    if not samples:
        raise DataError(f"{path}: the manifest lists no images")
    seen: dict[Path, int] = {}
    for number, sample in enumerate(samples, start=2):
        if sample.image in seen:
            raise DataError(
                f"{path}:{number}: image {sample.image} is listed twice (first on line {seen[sample.image]})"
            )
        seen[sample.image] = number
    defect_classes = sorted({s.class_name for s in samples if s.label == 1})
    return DataIndex(samples, [GOOD] + defect_classes, path, meta={"layout": "csv"})
