"""The student's per-epoch record: validation figures, the best checkpoint's choice, history.csv and history.png.

As Ultralytics' results.csv / results.png: one row per epoch (epoch, loss parts, validation figures, learning rate,
seconds), rewritten whole each epoch so a `--resume` continues it. Validation runs on the run's own validation split
without touching the training random streams (torch, numpy, random), so a run trains the same weights with it or
without it. The best checkpoint is the epoch with the highest validation image AUROC (pixel AUROC decides between
equals, then the earliest stays); when
validation cannot rank (no good or no defective image there) the last epoch is the one used, and the run says so.
"""

from __future__ import annotations

import contextlib
import csv
import math
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

SELECTED_BY = "val_image_auroc"  # the history column the best checkpoint is chosen on
TIE_BREAK = "val_pixel_auroc"  # ... and the one that decides between equals
FIRST_COLUMNS = ("epoch", "loss")
LAST_COLUMNS = ("val_images", "val_image_auroc", "val_pixel_auroc", "lr", "seconds")


@contextlib.contextmanager
def training_streams_kept(device: torch.device) -> Iterator[None]:
    """Run the body (a validation pass) and put back every random stream training draws from."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def validation_figures(outputs: dict | None) -> dict:
    """Image AUROC (None unless validation holds good and defective images), pixel AUROC (None without masks) and
    the image count, from predict_dataset's outputs on the validation split."""
    from onen.train.metrics import image_auroc, pixel_auroc

    if outputs is None:
        return {"val_images": 0, "val_image_auroc": None, "val_pixel_auroc": None}
    masked = outputs["has_mask"].astype(bool)
    has_defect_pixels = masked.any() and bool((outputs["mask"][masked] > 0.5).any())
    return {
        "val_images": int(len(outputs["label"])),
        "val_image_auroc": image_auroc(outputs["label"], outputs["score"]),
        "val_pixel_auroc": pixel_auroc(outputs["mask"][masked] > 0.5, outputs["map"][masked][:, 0])
        if has_defect_pixels
        else None,
    }


def rank(figures: dict) -> tuple[float, float] | None:
    """How an epoch's validation ranks: image AUROC, then pixel AUROC on ties (a small validation split often ties
    on the image figure); None when validation cannot rank it."""
    if figures.get(SELECTED_BY) is None:
        return None
    pixel = figures.get(TIE_BREAK)
    return float(figures[SELECTED_BY]), float(pixel) if pixel is not None else -1.0


def is_better(figures: dict, best: tuple[float, float] | None) -> bool:
    """Whether an epoch beats the best so far (the earliest of equals stays; an epoch without a rank never wins)."""
    mine = rank(figures)
    return mine is not None and (best is None or mine > tuple(best))


def read_history(path: Path) -> list[dict]:
    """The rows of a history.csv (numbers as floats, epoch as int, empty cells as None); [] when there is none."""
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [{key: _number(key, value) for key, value in row.items()} for row in csv.DictReader(handle)]


def seconds_spent(path: Path) -> float:
    """Training seconds recorded by a history.csv's epochs: a resumed run's earlier processes included."""
    return sum(row["seconds"] or 0.0 for row in read_history(path))


def _number(key: str, value: str) -> int | float | None:
    if value == "":
        return None
    return int(value) if key == "epoch" else float(value)


def write_history(path: Path, rows: list[dict]) -> Path:
    """history.csv: epoch and loss first, the loss parts, then validation figures, lr and seconds."""
    parts = sorted({key for row in rows for key in row} - set(FIRST_COLUMNS) - set(LAST_COLUMNS))
    columns = [*FIRST_COLUMNS, *parts, *LAST_COLUMNS]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _cell(row.get(key)) for key in columns})
    tmp.replace(path)
    return path


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


class EpochLosses:
    """Mean loss and loss parts (as loss_<part>) over an epoch's batches, weighted by batch size."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.images = 0

    def add(self, loss: float, parts: dict[str, float], images: int) -> None:
        for key, value in {"loss": loss, **{f"loss_{name}": part for name, part in parts.items()}}.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value) * images
        self.images += images

    def means(self) -> dict[str, float]:
        return {key: value / max(1, self.images) for key, value in self.sums.items()}
