"""The procedural AOI benchmark (`onen data synth`): a textured part on a cluttered background.

Every image shows one part (rounded rectangle or ellipse of brushed metal, cast metal, woven fabric or
painted plastic) lying among other objects, cables and noise. The part's outline is the AOI. Marks
(scratch, spot, crack) inside the AOI make a defect (label 1, class = mark kind, pixel mask); the same
marks outside the AOI leave the part good (label 0), as in seed 001's zipper relabelling. Written as a
CSV manifest (image,label,class,mask,aoi,split) plus benchmark.json with what each image contains.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from onen.train.data.marks import MARK_KINDS, draw_mark, mark_alpha
from onen.train.data.perlin import fractal_perlin
from onen.train.data.sample import GOOD
from onen.train.data.textures import random_color, stripes_texture

KINDS = ("good_plain", "good_outside") + MARK_KINDS  # what an image shows
KIND_SHARES = (0.3, 0.3) + (0.4 / len(MARK_KINDS),) * len(MARK_KINDS)
MATERIALS = ("brushed_metal", "cast_metal", "fabric", "plastic")
MANIFEST_NAME = "manifest.csv"
INFO_NAME = "benchmark.json"


# ----------------------------------------------------------------------------------------- materials
def _brushed_metal(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    streaks = cv2.blur(rng.normal(0, 1, (h, w)).astype(np.float32), (int(w * 0.3) | 1, 1))
    angle = rng.uniform(-30, 30)
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.3)
    streaks = cv2.warpAffine(streaks, matrix, (w, h), borderMode=cv2.BORDER_REFLECT)
    base = rng.uniform(120, 185)
    tint = rng.uniform(0.95, 1.05, 3)
    grey = base + streaks * 60 + fractal_perlin((h, w), (3, 3), rng, octaves=2) * 25
    return grey[..., None] * tint[None, None, :]


def _cast_metal(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    grain = fractal_perlin((h, w), (16, 16), rng, octaves=3) * 40 + rng.normal(0, 6, (h, w))
    base = rng.uniform(85, 140)
    tint = np.array([1.0, rng.uniform(0.95, 1.02), rng.uniform(0.88, 1.0)])
    return (base + grain)[..., None] * tint[None, None, :]


def _fabric(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    a, b = stripes_texture(h, w, rng), stripes_texture(h, w, rng)
    colour = random_color(rng, 40, 200)
    weave = (a.mean(axis=2) + b.mean(axis=2)) / 510.0
    return colour[None, None, :] * (0.7 + 0.5 * weave[..., None]) + rng.normal(0, 4, (h, w, 1))


def _plastic(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    colour = random_color(rng, 30, 220)
    orange_peel = fractal_perlin((h, w), (24, 24), rng, octaves=2) * 18
    return colour[None, None, :] + orange_peel[..., None]


_MATERIAL_FUNCS = {"brushed_metal": _brushed_metal, "cast_metal": _cast_metal, "fabric": _fabric, "plastic": _plastic}


# -------------------------------------------------------------------------------------- background
def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A conveyor/fixture scene: gradient, grime, other objects, cables."""
    base = random_color(rng, 20, 110)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    gradient = 0.75 + 0.5 * (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))
    grime = fractal_perlin((size, size), (6, 6), rng, octaves=4)[..., None] * 60
    image = base[None, None, :] * gradient[..., None] + grime
    for _ in range(int(rng.integers(4, 10))):
        colour = tuple(float(c) for c in random_color(rng, 10, 240))
        centre = rng.uniform(0, size, 2).astype(int)
        extent = int(size * rng.uniform(0.04, 0.2))
        choice = rng.random()
        if choice < 0.35:  # box / bracket
            corner = centre - extent
            cv2.rectangle(
                image,
                tuple(int(v) for v in corner),
                tuple(int(v) for v in centre + extent // 2),
                colour,
                -1,
                cv2.LINE_AA,
            )
        elif choice < 0.6:  # bolt / washer
            cv2.circle(image, tuple(int(v) for v in centre), extent // 2, colour, -1, cv2.LINE_AA)
            cv2.circle(
                image,
                tuple(int(v) for v in centre),
                max(2, extent // 5),
                tuple(c * 0.5 for c in colour),
                -1,
                cv2.LINE_AA,
            )
        elif choice < 0.8:  # irregular polygon
            points = centre + rng.normal(0, extent / 2, (int(rng.integers(3, 7)), 2))
            cv2.fillPoly(image, [points.astype(np.int32)], colour, cv2.LINE_AA)
        else:  # cable
            points = np.cumsum(rng.normal(0, size * 0.12, (6, 2)), axis=0) + centre
            cv2.polylines(image, [points.astype(np.int32)], False, colour, int(rng.integers(2, 7)), cv2.LINE_AA)
    return image


# ------------------------------------------------------------------------------------------- part
def _part_shape(size: int, rng: np.random.Generator) -> np.ndarray:
    """Coverage 0..1 of the part: a rotated rounded rectangle or ellipse taking 25..55% of the image."""
    canvas = np.zeros((size * 4, size * 4), np.uint8)
    half_w = size * 4 * rng.uniform(0.25, 0.38)
    half_h = size * 4 * rng.uniform(0.2, 0.32)
    centre = size * 4 * (0.5 + rng.uniform(-0.08, 0.08, 2))
    angle = rng.uniform(-35, 35)
    if rng.random() < 0.5:
        cv2.ellipse(
            canvas, (int(centre[0]), int(centre[1])), (int(half_w), int(half_h)), angle, 0, 360, 255, -1, cv2.LINE_AA
        )
    else:
        radius = min(half_w, half_h) * rng.uniform(0.15, 0.5)
        t = np.linspace(0, np.pi / 2, 12)
        corners = [
            (half_w - radius, half_h - radius, 0),
            (-(half_w - radius), half_h - radius, np.pi / 2),
            (-(half_w - radius), -(half_h - radius), np.pi),
            (half_w - radius, -(half_h - radius), 1.5 * np.pi),
        ]
        outline = np.concatenate(
            [np.stack([cx + radius * np.cos(t + a0), cy + radius * np.sin(t + a0)], 1) for cx, cy, a0 in corners]
        )
        theta = np.deg2rad(angle)
        rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        outline = outline @ rotation.T + centre
        cv2.fillPoly(canvas, [outline.astype(np.int32)], 255, cv2.LINE_AA)
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


def _place_part(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
    size = image.shape[0]
    coverage = _part_shape(size, rng)
    material = MATERIALS[int(rng.integers(0, len(MATERIALS)))]
    surface = _MATERIAL_FUNCS[material](size, size, rng)
    # light from one side, a soft rim where the part's edge curves away
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    light = 0.85 + 0.3 * (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))
    rim = cv2.GaussianBlur(coverage, (0, 0), size * 0.02)
    surface = surface * (light * (0.75 + 0.25 * rim))[..., None]
    shadow = np.roll(cv2.GaussianBlur(coverage, (0, 0), size * 0.02), (int(size * 0.02), int(size * 0.03)), axis=(0, 1))
    image = image * (1 - 0.5 * shadow[..., None])
    image = image * (1 - coverage[..., None]) + surface * coverage[..., None]
    return image, coverage >= 0.5, material


# ------------------------------------------------------------------------------------------ marks
def _add_mark(image: np.ndarray, kind: str, aoi: np.ndarray, inside: bool, rng: np.random.Generator, tries: int = 60):
    """Paint a mark fully inside the (eroded) AOI or fully outside the (dilated) AOI; None if it never fits."""
    size = image.shape[0]
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    allowed = (
        cv2.erode(aoi.astype(np.uint8), kernel) > 0
        if inside
        else cv2.dilate(aoi.astype(np.uint8), kernel, iterations=2) == 0
    )
    candidates = np.argwhere(allowed)
    if candidates.size == 0:
        return None
    scale = float(np.sqrt(aoi.sum())) if inside else size * 0.5
    for _ in range(tries):
        y, x = candidates[int(rng.integers(0, len(candidates)))]
        alpha = mark_alpha(kind, (size, size), np.array([x, y], float), scale, rng)
        footprint = alpha > 0.02
        if footprint.sum() >= 6 and not (footprint & ~allowed).any():
            return draw_mark(image, kind, alpha, rng)
    return None


def _finish(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera look: slight defocus and sensor noise."""
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), rng.uniform(0.4, 0.8))
    image = image + rng.normal(0, rng.uniform(2, 5), image.shape)
    return np.clip(image, 0, 255).round().astype(np.uint8)


def make_image(kind: str, size: int, rng: np.random.Generator) -> dict:
    """One benchmark image: dict with image (RGB uint8), aoi, mask (None for good), counts of marks."""
    for _ in range(20):
        image, aoi, material = _place_part(_background(size, rng), rng)
        mask = np.zeros((size, size), bool)
        inside = outside = 0
        ok = True
        if kind in MARK_KINDS:
            placed = _add_mark(image, kind, aoi, True, rng)
            ok = placed is not None
            if ok:
                image, mask = placed
                inside = 1
        n_outside = (
            int(rng.integers(1, 4))
            if kind == "good_outside"
            else (int(rng.integers(0, 2)) if kind in MARK_KINDS else 0)
        )
        for _ in range(n_outside):
            placed = _add_mark(image, MARK_KINDS[int(rng.integers(0, len(MARK_KINDS)))], aoi, False, rng)
            if placed is not None:
                image = placed[0]
                outside += 1
        if kind == "good_outside" and outside == 0:
            ok = False
        if ok:
            return {
                "image": _finish(image, rng),
                "aoi": aoi,
                "mask": mask if kind in MARK_KINDS else None,
                "material": material,
                "marks_inside": inside,
                "marks_outside": outside,
            }
    raise RuntimeError(f"could not place a '{kind}' mark after 20 scenes (size {size} too small?)")


def _assign(count: int, rng: np.random.Generator) -> list[str]:
    """Image kinds in exact shares, shuffled."""
    numbers = [int(round(share * count)) for share in KIND_SHARES]
    numbers[0] += count - sum(numbers)
    kinds = [k for k, n in zip(KINDS, numbers, strict=True) for _ in range(n)]
    return [kinds[i] for i in rng.permutation(len(kinds))]


def _assign_splits(kinds: list[str], test_fraction: float, val_fraction: float, rng: np.random.Generator) -> list[str]:
    """Stratified by image kind, so every kind (incl. good-with-outside-marks) is in every split."""
    splits = ["train"] * len(kinds)
    for kind in KINDS:
        members = [i for i, k in enumerate(kinds) if k == kind]
        order = rng.permutation(len(members))
        n_test, n_val = int(round(len(members) * test_fraction)), int(round(len(members) * val_fraction))
        for rank, position in enumerate(order):
            splits[members[position]] = "test" if rank < n_test else ("val" if rank < n_test + n_val else "train")
    return splits


def generate(
    out_dir: str | Path,
    seed: int = 0,
    count: int = 400,
    size: int = 256,
    test_fraction: float = 0.25,
    val_fraction: float = 0.15,
    progress: bool = True,
) -> Path:
    """Write the benchmark to out_dir (images/, masks/, aoi/, manifest.csv, benchmark.json); returns the CSV."""
    if count < len(KINDS):
        raise ValueError(f"count must be at least {len(KINDS)} (one image per kind), got {count}")
    if size < 64:
        raise ValueError(f"size must be at least 64 px, got {size}")
    out_dir = Path(out_dir)
    for sub in ("images", "masks", "aoi"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    plan_rng = np.random.default_rng([seed, 1 << 20])
    kinds = _assign(count, plan_rng)
    splits = _assign_splits(kinds, test_fraction, val_fraction, plan_rng)
    rows, info = [], {}
    for number, (kind, split) in enumerate(
        tqdm(list(zip(kinds, splits, strict=True)), desc="generating benchmark", unit="img", disable=not progress)
    ):
        made = make_image(kind, size, np.random.default_rng([seed, number]))
        stem = f"{number:05d}_{kind}"
        image_rel, aoi_rel = f"images/{stem}.png", f"aoi/{stem}.png"
        cv2.imwrite(str(out_dir / image_rel), cv2.cvtColor(made["image"], cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(out_dir / aoi_rel), made["aoi"].astype(np.uint8) * 255)
        mask_rel = ""
        if made["mask"] is not None:
            mask_rel = f"masks/{stem}.png"
            cv2.imwrite(str(out_dir / mask_rel), made["mask"].astype(np.uint8) * 255)
        is_defect = kind in MARK_KINDS
        rows.append(
            {
                "image": image_rel,
                "label": int(is_defect),
                "class": kind if is_defect else GOOD,
                "mask": mask_rel,
                "aoi": aoi_rel,
                "split": split,
            }
        )
        info[image_rel] = {
            "kind": kind,
            "material": made["material"],
            "marks_inside": made["marks_inside"],
            "marks_outside": made["marks_outside"],
        }
    manifest = out_dir / MANIFEST_NAME
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "label", "class", "mask", "aoi", "split"])
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / INFO_NAME).write_text(
        json.dumps({"seed": seed, "count": count, "size": size, "images": info}, indent=1) + "\n"
    )
    return manifest


def load_info(manifest: str | Path) -> dict[str, dict]:
    """Per-image facts of a generated benchmark (kind, marks outside the AOI...), keyed by absolute image path."""
    manifest = Path(manifest)
    data = json.loads((manifest.parent / INFO_NAME).read_text())
    return {str((manifest.parent / rel).resolve()): facts for rel, facts in data["images"].items()}
