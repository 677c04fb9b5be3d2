"""Readers for the three layouts, on small real files written here and on the real magnetic tile set."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from onen.edge.errors import DataError
from onen.train.data.dataset import SYNTHETIC_CLASS_INDEX, InspectionDataset
from onen.train.data.readers import load_index, validate
from onen.train.data.synthetic import SyntheticDefects


def _image(path: Path, h: int = 24, w: int = 32, value: int = 120, gray: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    shape = (h, w) if gray else (h, w, 3)
    cv2.imwrite(str(path), np.clip(value + rng.integers(-20, 20, shape), 0, 255).astype(np.uint8))
    return path


def _mask(path: Path, h: int = 24, w: int = 32, box: tuple[int, int, int, int] | None = (4, 4, 10, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros((h, w), np.uint8)
    if box:
        y0, x0, y1, x1 = box
        mask[y0:y1, x0:x1] = 255
    cv2.imwrite(str(path), mask)
    return path


def _write_csv(path: Path, rows: list[str], header: str = "image,label,class,mask,aoi,split") -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


# ------------------------------------------------------------------------------------------- layouts
def test_mvtec_layout(tmp_path):
    root = tmp_path / "bottle"
    for i in range(3):
        _image(root / "train" / "good" / f"{i:03d}.png")
    _image(root / "test" / "good" / "000.png")
    for kind in ("broken", "contamination"):
        _image(root / "test" / kind / "000.png")
        _mask(root / "ground_truth" / kind / "000_mask.png")
    index = load_index(root)
    assert index.meta["layout"] == "mvtec"
    assert index.class_names == ["good", "broken", "contamination"]
    assert index.summary()["per_class"] == {"good": 4, "broken": 1, "contamination": 1}
    assert {s.split for s in index.samples if s.class_name == "good"} == {"train", "test"}
    broken = next(s for s in index.samples if s.class_name == "broken")
    assert broken.label == 1 and broken.mask.name == "000_mask.png"
    assert validate(index, progress=False).masks == 2


def test_mvtec_missing_mask_is_named(tmp_path):
    root = tmp_path / "screw"
    _image(root / "train" / "good" / "000.png")
    _image(root / "test" / "thread" / "007.png")
    with pytest.raises(DataError, match="007_mask.png"):
        load_index(root)


def test_class_folders_with_masks_beside_images(tmp_path):
    root = tmp_path / "tiles"
    for i in range(3):
        _image(root / "MT_Free" / "Imgs" / f"f{i}.jpg")
        _mask(root / "MT_Free" / "Imgs" / f"f{i}.png", box=None)
    for i in range(2):
        _image(root / "MT_Crack" / "Imgs" / f"c{i}.jpg")
        _mask(root / "MT_Crack" / "Imgs" / f"c{i}.png")
    _image(root / "MT_Uneven" / "Imgs" / "u0.jpg")
    _mask(root / "MT_Uneven" / "Imgs" / "u0.png", box=None)  # empty mask on a defect: still a defect
    index = load_index(root)
    assert index.class_names == ["good", "crack", "uneven"]
    assert index.summary()["per_class"] == {"good": 3, "crack": 2, "uneven": 1}
    assert all(s.mask is not None and s.mask.suffix == ".png" and s.image.suffix == ".jpg" for s in index.samples)
    report = validate(index, progress=False)
    assert [p.name for p in report.defects_with_empty_mask] == ["u0.jpg"]


def test_class_folders_png_images_with_mask_suffix_and_gray(tmp_path):
    root = tmp_path / "parts"
    _image(root / "ok" / "a.png", gray=True)
    _image(root / "scratch" / "b.png")
    _mask(root / "scratch" / "b_mask.png")
    _image(root / "spot" / "c.bmp")
    index = load_index(root)
    by_class = {s.class_name: s for s in index.samples}
    assert by_class["scratch"].mask.name == "b_mask.png"
    assert by_class["spot"].mask is None and by_class["good"].label == 0
    assert len(index.samples) == 3


def test_csv_manifest_with_shared_aoi(tmp_path):
    _image(tmp_path / "img" / "g0.png")
    _image(tmp_path / "img" / "g1.png")
    _image(tmp_path / "img" / "d0.png")
    _mask(tmp_path / "masks" / "d0.png")
    _mask(tmp_path / "aoi" / "part.png", box=(0, 0, 20, 30))
    csv = _write_csv(
        tmp_path / "data.csv",
        [
            "img/g0.png,0,good,,,train",
            "img/g1.png,0,,,aoi/part.png,test",
            "img/d0.png,1,scratch,masks/d0.png,,",
        ],
    )
    index = load_index(csv, aoi=tmp_path / "aoi" / "part.png")
    assert index.class_names == ["good", "scratch"]
    assert index.aoi == tmp_path / "aoi" / "part.png"
    assert [s.split for s in index.samples] == ["train", "test", None]
    assert index.samples[1].aoi is not None and index.samples[1].class_name == "good"
    assert load_index(tmp_path).meta["layout"] == "csv"  # a folder holding one CSV
    validate(index, progress=False)


def test_magnetic_tile_counts(magnetic_tile_dir):
    index = load_index(magnetic_tile_dir)
    counts = index.summary()["per_class"]
    assert counts == {"good": 952, "blowhole": 115, "break": 85, "crack": 57, "fray": 32, "uneven": 103}
    assert index.class_names[0] == "good"
    assert all(s.mask is not None for s in index.samples)
    few = index.with_samples([s for s in index.samples if s.class_name == "uneven"][:12])
    validate(few, progress=False)


# --------------------------------------------------------------------------------------- bad input
def test_unreadable_image_is_named_by_validate_and_dataset(tmp_path):
    _image(tmp_path / "good" / "a.png")
    (tmp_path / "dent").mkdir()
    (tmp_path / "dent" / "broken.png").write_bytes(b"\x89PNG not really")
    index = load_index(tmp_path)
    with pytest.raises(DataError, match="broken.png"):
        validate(index, progress=False)
    dataset = InspectionDataset(index.samples, index.class_names, 16, 16)
    bad = next(i for i, s in enumerate(index.samples) if s.image.name == "broken.png")
    with pytest.raises(DataError, match="broken.png"):
        dataset[bad]


def test_mask_size_mismatch_is_named(tmp_path):
    _image(tmp_path / "good" / "a.jpg")
    _image(tmp_path / "crack" / "b.jpg")
    _mask(tmp_path / "crack" / "b.png", h=20, w=20)
    index = load_index(tmp_path)
    with pytest.raises(DataError, match=r"b.png.*size of its image"):
        validate(index, progress=False)


def test_missing_folder_column_and_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_index(tmp_path / "nowhere")
    (tmp_path / "empty_root").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        load_index(tmp_path / "empty_root")
    _image(tmp_path / "a.png")
    with pytest.raises(DataError, match=r"no\.csv.*missing column.*label"):
        load_index(_write_csv(tmp_path / "no.csv", ["a.png,good"], header="image,class"))
    with pytest.raises(DataError, match=r"typo\.csv.*'lable'.*did you mean 'label'"):
        load_index(_write_csv(tmp_path / "typo.csv", ["a.png,0,good"], header="image,lable,class"))
    with pytest.raises(DataError, match=r"gone\.csv:3: image file .*missing\.png does not exist"):
        load_index(_write_csv(tmp_path / "gone.csv", ["a.png,0,good,,,", "missing.png,0,good,,,"]))


def test_empty_class_folder_is_an_error(tmp_path):
    _image(tmp_path / "good" / "a.png")
    (tmp_path / "scratch").mkdir()
    with pytest.raises(DataError, match=r"scratch.*empty class"):
        load_index(tmp_path)


@pytest.mark.parametrize(
    "row, message",
    [
        ("a.png,1,good,,,", "class 'good' contradicts label 1"),
        ("a.png,0,scratch,,,", "label 0 .* contradicts class 'scratch'"),
        ("a.png,1,,,,", "label 1 .* needs a class"),
        ("a.png,2,good,,,", "label must be 0"),
        ("a.png,0,good,,,later", "split must be one of"),
    ],
)
def test_csv_label_contradictions_are_named(tmp_path, row, message):
    _image(tmp_path / "a.png")
    with pytest.raises(DataError, match=rf"bad\.csv:2: {message}"):
        load_index(_write_csv(tmp_path / "bad.csv", [row]))


def test_good_label_with_defect_mask_is_named(tmp_path):
    _image(tmp_path / "a.png")
    _mask(tmp_path / "a_gt.png")
    index = load_index(_write_csv(tmp_path / "m.csv", ["a.png,0,good,a_gt.png,,"]))
    with pytest.raises(DataError, match=r"a_gt.png.*labelled good"):
        validate(index, progress=False)
    with pytest.raises(DataError, match=r"a_gt.png.*labelled good"):
        InspectionDataset(index.samples, index.class_names, 16, 16)[0]


def test_good_folder_with_defect_mask_is_named(tmp_path):
    _image(tmp_path / "MT_Free" / "a.jpg")
    _mask(tmp_path / "MT_Free" / "a.png")
    _image(tmp_path / "MT_Crack" / "b.jpg")
    with pytest.raises(DataError, match=r"MT_Free/a.png.*labelled good"):
        validate(load_index(tmp_path), progress=False)


def test_empty_aoi_is_an_error(tmp_path):
    _image(tmp_path / "good" / "a.png")
    _mask(tmp_path / "aoi.png", box=None)
    index = load_index(tmp_path, aoi=tmp_path / "aoi.png")
    with pytest.raises(DataError, match=r"aoi.png.*AOI mask is empty"):
        validate(index, progress=False)


# ------------------------------------------------------------------------------------------ dataset
def test_dataset_items_resize_flip_and_synthetic(tmp_path):
    for i in range(4):
        _image(tmp_path / "good" / f"g{i}.png", h=40, w=60)
    _image(tmp_path / "dent" / "d.jpg", h=40, w=60)
    _mask(tmp_path / "dent" / "d.png", h=40, w=60, box=(0, 0, 20, 30))
    _mask(tmp_path / "aoi.png", h=10, w=10, box=(2, 2, 8, 8))
    index = load_index(tmp_path, aoi=tmp_path / "aoi.png")
    plain = InspectionDataset(index.samples, index.class_names, 32, 48, aoi=index.aoi)
    dent = next(i for i, s in enumerate(index.samples) if s.class_name == "dent")
    item = plain[dent]
    assert item["image"].shape == (32, 48, 3) and item["image"].dtype == torch.uint8
    assert item["mask"].shape == (32, 48) and item["mask"].dtype == torch.float32
    assert item["mask"][:16, :24].min() == 1 and item["mask"][16:, 24:].max() == 0
    assert item["label"] == 1 and item["class_index"] == 1 and bool(item["has_mask"])
    assert item["aoi"].sum() > 0 and item["aoi"][0, 0] == 0

    synthetic = InspectionDataset(
        index.samples,
        index.class_names,
        32,
        48,
        aoi=index.aoi,
        synthetic=SyntheticDefects(seed=0),
        synthetic_probability=1.0,
        augment=True,
        seed=3,
    )
    good = next(i for i, s in enumerate(index.samples) if s.label == 0)
    made = synthetic[good]
    assert made["label"] == 1 and made["class_index"] == SYNTHETIC_CLASS_INDEX and bool(made["synthetic"])
    assert made["mask"].sum() > 0 and (made["mask"] * (1 - made["aoi"])).sum() == 0
    again = synthetic[good]
    assert torch.equal(made["image"], again["image"]) and torch.equal(made["mask"], again["mask"])

    flipped = InspectionDataset(index.samples, index.class_names, 32, 48, augment=True, seed=0)
    flips = [flipped[dent]["mask"] for _ in range(1)]
    for epoch in range(8):
        flipped.set_epoch(epoch)
        flips.append(flipped[dent]["mask"])
    corners = {(int(m[0, 0]), int(m[0, -1]), int(m[-1, 0]), int(m[-1, -1])) for m in flips}
    assert len(corners) > 1  # some epochs flip, and the mask moved with the image


def test_thin_defect_survives_downscaling_and_empty_defect_mask_has_no_target(tmp_path):
    _image(tmp_path / "good" / "g.png", h=90, w=90)
    _image(tmp_path / "crack" / "c.jpg", h=90, w=90)
    thin = np.zeros((90, 90), np.uint8)
    thin[40, 10:80] = 255  # 1 px line: nearest-neighbour at 1/3 scale may drop it
    cv2.imwrite(str(tmp_path / "crack" / "c.png"), thin)
    _image(tmp_path / "uneven" / "u.jpg", h=90, w=90)
    _mask(tmp_path / "uneven" / "u.png", h=90, w=90, box=None)
    index = load_index(tmp_path)
    dataset = InspectionDataset(index.samples, index.class_names, 30, 30)
    items = {s.class_name: dataset[i] for i, s in enumerate(index.samples)}
    assert items["crack"]["mask"].sum() >= 20 and bool(items["crack"]["has_mask"])
    assert items["uneven"]["label"] == 1 and not bool(items["uneven"]["has_mask"])
    assert bool(items["good"]["has_mask"]) and items["good"]["mask"].sum() == 0


def test_class_folders_with_a_top_level_masks_folder(tmp_path):
    _image(tmp_path / "good" / "g.png")
    _image(tmp_path / "dent" / "d1.png")
    _image(tmp_path / "dent" / "d2.png")
    _mask(tmp_path / "masks" / "dent" / "d1.png")
    _mask(tmp_path / "masks" / "dent" / "d2_mask.png")
    index = load_index(tmp_path)
    assert index.class_names == ["good", "dent"]
    masks = {s.image.name: s.mask for s in index.samples}
    assert masks["d1.png"] == tmp_path / "masks" / "dent" / "d1.png"
    assert masks["d2.png"] == tmp_path / "masks" / "dent" / "d2_mask.png" and masks["g.png"] is None


def test_onen_data_check_prints_one_line_and_flags_orphan_masks_and_defects_without_masks(tmp_path, capsys):
    """Issue 13 item 9: a one-line verdict; a lone mask is an orphan, not a good image; a maskless defect is named."""
    import json

    from onen.edge.cli import main

    root = tmp_path / "tiles"
    for i in range(3):
        _image(root / "MT_Free" / "Imgs" / f"f{i}.jpg")
        _mask(root / "MT_Free" / "Imgs" / f"f{i}.png", box=None)
    _mask(root / "MT_Free" / "Imgs" / "lost.png", box=None)  # its image was deleted
    _image(root / "MT_Crack" / "Imgs" / "c0.jpg")
    _mask(root / "MT_Crack" / "Imgs" / "c0.png")
    _image(root / "MT_Crack" / "Imgs" / "c1.jpg")  # a defect without its mask
    assert main(["data", "check", str(root)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("PROBLEMS:")
    assert "orphan masks: 1" in lines[0] and "defective images without a mask: 1" in lines[0] and "lost.png" in lines[0]
    assert main(["data", "check", str(root), "--json"]) == 1
    details = json.loads(capsys.readouterr().out)
    assert [Path(p).name for p in details["orphan_masks"]] == ["lost.png"]
    assert [Path(p).name for p in details["defects_without_mask"]] == ["c1.jpg"]
    (root / "MT_Free" / "Imgs" / "lost.png").unlink()
    assert main(["data", "check", str(root)]) == 0
    assert capsys.readouterr().out.startswith("OK:")
