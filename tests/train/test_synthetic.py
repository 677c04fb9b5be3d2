"""Synthetic defects: inside the AOI only, never empty, size controlled, deterministic given an rng."""

from __future__ import annotations

import numpy as np
import pytest

from onen.train.data.perlin import fractal_perlin, perlin_2d
from onen.train.data.synthetic import SyntheticDefects, perlin_defect_mask


def _surface(h: int = 96, w: int = 128) -> np.ndarray:
    rng = np.random.default_rng(0)
    field = fractal_perlin((h, w), (4, 4), rng)
    return np.repeat(np.clip(128 + field[..., None] * 120, 0, 255).astype(np.uint8), 3, axis=2)


def test_perlin_is_smooth_and_seeded():
    a = perlin_2d((64, 64), (4, 4), np.random.default_rng(1))
    b = perlin_2d((64, 64), (4, 4), np.random.default_rng(1))
    assert np.array_equal(a, b) and a.std() > 0.05
    assert np.abs(np.diff(a, axis=1)).max() < 0.2  # neighbouring pixels differ little: smooth
    assert abs(float(a[0, 0])) < 1e-6  # zero at the lattice points


def test_defects_stay_inside_aoi_and_are_never_empty():
    image = _surface()
    aoi = np.zeros(image.shape[:2], bool)
    aoi[20:70, 30:100] = True
    maker = SyntheticDefects(seed=0)
    for i in range(30):
        out, mask = maker.make(image, aoi, np.random.default_rng(i))
        assert mask.any() and not (mask & ~aoi).any()
        assert np.array_equal(out[~mask], image[~mask])  # nothing changes outside the defect
        assert np.abs(out[mask].astype(int) - image[mask]).mean() > 5


def test_same_rng_same_defect():
    image, maker = _surface(), SyntheticDefects(seed=0)
    a = maker.make(image, None, np.random.default_rng(42))
    b = maker.make(image, None, np.random.default_rng(42))
    c = maker.make(image, None, np.random.default_rng(43))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    assert np.array_equal(SyntheticDefects(seed=5).make(image)[1], SyntheticDefects(seed=5).make(image)[1])


@pytest.mark.parametrize("kind", ["blob", "crack"])
def test_area_is_controlled(kind):
    aoi = np.zeros((100, 100), bool)
    aoi[10:90, 10:90] = True
    for fraction in (0.01, 0.1):
        mask = perlin_defect_mask((100, 100), aoi, np.random.default_rng(0), fraction, kind)
        assert mask.sum() == round(fraction * aoi.sum()) and not (mask & ~aoi).any()
    small = SyntheticDefects(seed=0, area_range=(0.01, 0.01))
    big = SyntheticDefects(seed=0, area_range=(0.2, 0.2))
    assert small.make(_surface(100, 100), aoi)[1].sum() < big.make(_surface(100, 100), aoi)[1].sum()


def test_tiny_aoi_is_refused():
    aoi = np.zeros((32, 32), bool)
    aoi[0, 0] = True
    with pytest.raises(ValueError, match="AOI has 1 pixels"):
        SyntheticDefects(seed=0).make(_surface(32, 32), aoi)


def test_benchmark_generator_writes_a_consistent_csv(tmp_path):
    from onen.edge.images import read_image_rgb, read_mask
    from onen.train.data.readers import load_index, validate
    from onen.train.data.synth_benchmark import generate, load_info

    manifest = generate(tmp_path / "a", seed=4, count=12, size=96, progress=False)
    index = load_index(manifest)
    validate(index, progress=False)
    info = load_info(manifest)
    assert set(index.class_names) == {"good", "scratch", "spot", "crack"}
    assert {s.split for s in index.samples} == {"train", "val", "test"}
    kinds = {facts["kind"] for facts in info.values()}
    assert kinds == {"good_plain", "good_outside", "scratch", "spot", "crack"}
    for sample in index.samples:
        facts = info[str(sample.image)]
        aoi = read_mask(sample.aoi)
        assert aoi.any() and sample.aoi is not None
        if sample.label == 1:
            mask = read_mask(sample.mask)
            assert mask.any() and not (mask & ~aoi).any() and facts["marks_inside"] == 1
            assert sample.class_name == facts["kind"]
        else:
            assert sample.mask is None and sample.class_name == "good" and facts["marks_inside"] == 0
            assert (facts["marks_outside"] > 0) == (facts["kind"] == "good_outside")
    again = generate(tmp_path / "b", seed=4, count=12, size=96, progress=False)
    first = sorted(index.samples, key=lambda s: s.image.name)[0]
    assert (again.parent / "images" / first.image.name).read_bytes() == first.image.read_bytes()
    assert read_image_rgb(first.image).shape == (96, 96, 3)


def test_grey_images_get_grey_defects():
    image = _surface()  # all three channels equal
    maker = SyntheticDefects(seed=0, texture_probability=1.0)
    for i in range(6):
        out, mask = maker.make(image, None, np.random.default_rng(i))
        spread = out.astype(int).max(axis=2) - out.astype(int).min(axis=2)
        assert spread.max() <= 1, "a colour cast would be a shortcut the real grey defects never offer"


def test_outside_marks_change_only_pixels_outside_the_aoi_and_keep_label_and_mask(tmp_path):
    import csv

    import cv2

    from onen.train.data.dataset import InspectionDataset
    from onen.train.data.readers import load_index

    image = _surface(64, 64)
    aoi = np.zeros((64, 64), np.uint8)
    aoi[16:48, 16:48] = 255
    mask = np.zeros((64, 64), np.uint8)
    mask[30:34, 30:34] = 255
    cv2.imwrite(str(tmp_path / "part.png"), image)
    cv2.imwrite(str(tmp_path / "good.png"), image)
    cv2.imwrite(str(tmp_path / "aoi.png"), aoi)
    cv2.imwrite(str(tmp_path / "mask.png"), mask)
    cv2.imwrite(str(tmp_path / "whole.png"), np.full((64, 64), 255, np.uint8))
    with open(tmp_path / "data.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label", "class", "mask", "aoi", "split"])
        writer.writerow(["part.png", 1, "dent", "mask.png", "aoi.png", "train"])
        writer.writerow(["good.png", 0, "good", "", "whole.png", "train"])  # no outside: nothing to paste on
    index = load_index(tmp_path / "data.csv")
    plain = InspectionDataset(index.samples, index.class_names, 64, 64)
    marked = InspectionDataset(
        index.samples, index.class_names, 64, 64, outside_marks=SyntheticDefects(seed=1), outside_probability=1.0
    )
    before, after = plain[0], marked[0]
    changed = (before["image"] != after["image"]).any(dim=2).numpy()
    assert changed.any() and not changed[16:48, 16:48].any()
    assert int(after["label"]) == 1 and int(after["class_index"]) == int(before["class_index"])
    assert np.array_equal(after["mask"].numpy(), before["mask"].numpy()) and bool(after["synthetic"])
    assert np.array_equal(marked[1]["image"].numpy(), plain[1]["image"].numpy()) and not bool(marked[1]["synthetic"])
