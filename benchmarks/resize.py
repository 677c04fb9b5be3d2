"""Camera frame -> model input: `edge.images.resize_to_input` against OpenCV's one-step INTER_AREA, per frame size.

The one-step INTER_AREA is the strongest single OpenCV call of the same quality (an area average: no aliasing of
thin cracks), what onen did before the halvings and still does for images under 4x the input. Frames are smooth
noise (the time does not depend on the content), one OpenCV thread as in the daemon, RGB and a mono camera's
single plane; the two calls alternate, medians are quoted with their ratio, and the mean pixel difference between
the two results says how far the pixels moved (a bundle is trained with the resize it is served with).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from onen.edge.images import resize_to_input
from onen.edge.sizes import parse_pixel_size

FRAMES = ((512, 512), (1024, 1280), (1080, 1920), (2048, 2448))  # HxW: the daemon bench's film, common sensors
INPUTS = ((224, 224), (144, 112))  # HxW: the daemon bench's student, magnetic tile's `--size auto`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calls", type=int, default=100, help="calls of each resize per frame size (default 100)")
    parser.add_argument(
        "--data",
        type=Path,
        help="also check a data set (folder or manifest, as `onen train --data` reads it): which of its images "
        "resize_to_input brings to other pixels than the one-step resize (a model trained on them before would "
        "see other pixels)",
    )
    parser.add_argument("--input", default="144x112", metavar="HxW", help="model input for --data (default 144x112)")


def _one_step(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """onen's resize before the halvings: INTER_AREA to shrink, INTER_LINEAR to enlarge."""
    if image.shape[:2] == (height, width):
        return image
    shrinking = image.shape[0] * image.shape[1] > height * width
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def check_data(data: Path, height: int, width: int) -> dict[str, object]:
    """Every image of `data` through both resizes, compared bit for bit."""
    from tqdm import tqdm

    from onen.edge.images import read_image_rgb
    from onen.train.data.readers import load_index

    samples = load_index(data).samples
    large = changed = 0
    for sample in tqdm(samples, desc=f"{data.name} at {height}x{width}", unit="image"):
        image = read_image_rgb(sample.image)
        large += image.shape[0] >= 4 * height and image.shape[1] >= 4 * width
        changed += not np.array_equal(resize_to_input(image, height, width), _one_step(image, height, width))
    return {
        "data": str(data),
        "input": f"{height}x{width}",
        "images": len(samples),
        "halved": large,
        "other_pixels": changed,
    }


def _frame(height: int, width: int, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (5, 5), 0)


def _medians(image: np.ndarray, height: int, width: int, calls: int) -> tuple[float, float]:
    one_step, halving = [], []
    for _ in range(calls):
        started = time.perf_counter()
        _one_step(image, height, width)
        middle = time.perf_counter()
        resize_to_input(image, height, width)
        one_step.append(middle - started)
        halving.append(time.perf_counter() - middle)
    return statistics.median(one_step) * 1000, statistics.median(halving) * 1000


def main(args: argparse.Namespace) -> int:
    cv2.setNumThreads(1)
    figures: list[dict[str, object]] = []
    print("frame -> input, colour: one-step INTER_AREA ms / resize_to_input ms = speed-up, mean |pixel difference|")
    for frame_hw in FRAMES:
        rgb = _frame(*frame_hw, seed=len(figures))
        for colour, image in (("rgb", rgb), ("mono", np.ascontiguousarray(rgb[..., 0]))):
            for height, width in INPUTS:
                one_step, halving = _medians(image, height, width, args.calls)
                direct = _one_step(image, height, width)
                moved = float(np.abs(direct.astype(np.int16) - resize_to_input(image, height, width)).mean())
                row = {
                    "frame": f"{frame_hw[0]}x{frame_hw[1]}",
                    "input": f"{height}x{width}",
                    "colour": colour,
                    "one_step_ms": round(one_step, 3),
                    "resize_to_input_ms": round(halving, 3),
                    "speedup": round(one_step / halving, 2),
                    "mean_pixel_difference": round(moved, 2),
                }
                figures.append(row)
                print(
                    f"{row['frame']} -> {row['input']} {colour}: {one_step:.3f} / {halving:.3f} ms = "
                    f"x{row['speedup']:.2f}, {moved:.2f} grey levels"
                )
    report: dict[str, object] = {"frames": figures}
    if args.data:
        height, width = parse_pixel_size(args.input, "--input", "HEIGHTxWIDTH", "144x112")
        report["data"] = check = check_data(args.data, height, width)
        print(
            f"{check['data']} at {check['input']}: {check['images']} images, {check['halved']} at least 4x the input "
            f"(halved), {check['other_pixels']} with other pixels than the one-step resize"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0
