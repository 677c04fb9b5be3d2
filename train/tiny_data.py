"""A tiny procedural defect data set (CSV layout of the readers), for fast recipes and tests.

Textured gray parts with a darker AOI border; defects are dark spots or bright scratches inside the AOI
(label 1, with a mask). Deterministic for a seed. The richer AOI benchmark is train.data.synth_benchmark;
this one exists so a bundle can be trained in seconds without depending on anything else.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("good", "spot", "scratch")


@dataclass
class TinySet:
    images: np.ndarray  # uint8 [N,H,W,3]
    masks: np.ndarray  # bool [N,H,W]
    labels: np.ndarray  # int64 [N] 0/1
    classes: np.ndarray  # int64 [N] index into CLASSES
    aoi: np.ndarray  # bool [H,W]
    class_names: tuple[str, ...] = CLASSES


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    noise = rng.normal(0, 1, (size // 4 + 1, size // 4 + 1)).astype(np.float32)
    smooth = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    fine = rng.normal(0, 4, (size, size)).astype(np.float32)
    return 128 + 12 * smooth + fine


def make_tiny_set(seed: int = 0, count: int = 96, size: int = 64, defect_fraction: float = 0.5) -> TinySet:
    rng = np.random.default_rng(seed)
    margin = size // 8
    aoi = np.zeros((size, size), bool)
    aoi[margin:-margin, margin:-margin] = True
    images, masks, labels, classes = [], [], [], []
    for index in range(count):
        gray = _texture(rng, size)
        gray[~aoi] -= 40
        mask = np.zeros((size, size), np.uint8)
        label, cls = 0, 0
        if index % int(round(1 / defect_fraction)) == 1:
            label = 1
            cls = 1 + int(rng.integers(0, 2))
            cx, cy = (int(v) for v in rng.integers(margin + 6, size - margin - 6, 2))
            if cls == 1:
                radius = int(rng.integers(size // 16 + 2, size // 8 + 2))
                cv2.circle(mask, (cx, cy), radius, 1, -1)
                gray[mask > 0] -= 60
            else:
                angle = rng.uniform(0, np.pi)
                length = rng.integers(size // 5, size // 3)
                dx, dy = int(np.cos(angle) * length / 2), int(np.sin(angle) * length / 2)
                cv2.line(mask, (cx - dx, cy - dy), (cx + dx, cy + dy), 1, max(2, size // 32))
                gray[mask > 0] += 70
            mask &= aoi.astype(np.uint8)
        image = np.clip(gray, 0, 255).astype(np.uint8)
        images.append(np.repeat(image[:, :, None], 3, axis=2))
        masks.append(mask.astype(bool))
        labels.append(label)
        classes.append(cls)
    return TinySet(np.stack(images), np.stack(masks), np.array(labels, np.int64), np.array(classes, np.int64), aoi)


def write_tiny_dataset(out_dir: str | Path, seed: int = 0, count: int = 96, size: int = 64) -> Path:
    """Write the tiny set as PNGs + data.csv (header image,label,class,mask,aoi,split) + aoi.png; return the CSV."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    data = make_tiny_set(seed, count, size)
    cv2.imwrite(str(out_dir / "aoi.png"), data.aoi.astype(np.uint8) * 255)
    rows = []
    for index in range(len(data.images)):
        image_name = f"images/{index:04d}.png"
        cv2.imwrite(str(out_dir / image_name), cv2.cvtColor(data.images[index], cv2.COLOR_RGB2BGR))
        mask_name = ""
        if data.labels[index]:
            mask_name = f"masks/{index:04d}.png"
            cv2.imwrite(str(out_dir / mask_name), data.masks[index].astype(np.uint8) * 255)
        rows.append(
            {
                "image": image_name,
                "label": int(data.labels[index]),
                "class": data.class_names[data.classes[index]],
                "mask": mask_name,
                "aoi": "aoi.png",
                "split": "",
            }
        )
    csv_path = out_dir / "data.csv"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "label", "class", "mask", "aoi", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return csv_path
