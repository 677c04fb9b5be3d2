"""A representative INT8 calibration set for TensorRT: good + defective images, stratified, reproducible.

INT8 ranges are fitted on the activations of these images, so they must span what the line shows:
mostly good parts, but enough defects that their (larger) activations are not clipped. Strata are the
sub-folders (defect classes, days, lighting set-ups...); inside one, images are picked evenly along the
sorted names (systematic sampling with a seeded offset), which covers drifts over a capture sequence
better than a random draw and gives the same list for the same seed.
The list file (one path per line, relative to the file, '#' comments) is read by
edge.engines.int8_calibration.list_calibration_images.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from onen.calibration.runner import list_images, progress
from onen.edge.errors import DataError
from onen.edge.images import read_image_rgb
from onen.edge.rectify import Rectification


@dataclass
class Selection:
    paths: list[Path]
    per_stratum: dict[str, int]  # "good/<sub>" or "defect/<sub>" -> images taken
    available: dict[str, int]
    seed: int


def _strata(folder: Path, kind: str) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in list_images(folder):
        parent = path.parent.relative_to(folder)
        groups[f"{kind}/{parent.as_posix() if str(parent) != '.' else '.'}"].append(path)
    return dict(groups)


def _allocate(total: int, sizes: dict[str, int]) -> dict[str, int]:
    """Proportional allocation (largest remainder), at least one per stratum while the total allows."""
    available = sum(sizes.values())
    total = min(total, available)
    if total <= 0:
        return {key: 0 for key in sizes}
    shares = {key: total * size / available for key, size in sizes.items()}
    counts = {key: min(sizes[key], math.floor(share)) for key, share in shares.items()}
    for key in sorted(sizes, key=lambda k: -sizes[k]):
        if sum(counts.values()) >= total:
            break
        if counts[key] == 0:
            counts[key] = 1
    while sum(counts.values()) < total:
        key = max((k for k in sizes if counts[k] < sizes[k]), key=lambda k: shares[k] - counts[k])
        counts[key] += 1
    while sum(counts.values()) > total:
        key = max(counts, key=lambda k: counts[k])
        counts[key] -= 1
    return counts


def _systematic(paths: list[Path], count: int, rng: np.random.Generator) -> list[Path]:
    if count >= len(paths):
        return list(paths)
    stride = len(paths) / count
    offset = rng.uniform(0, stride)
    return [paths[min(len(paths) - 1, int(offset + i * stride))] for i in range(count)]


def select_int8_images(
    good: Path, defect: Path | None, count: int, defect_fraction: float = 0.25, seed: int = 0
) -> Selection:
    if count < 1:
        raise DataError(f"--count must be >= 1, got {count}")
    if not 0.0 <= defect_fraction < 1.0:
        raise DataError(f"--defect-fraction must be in [0, 1), got {defect_fraction}")
    good_strata = _strata(Path(good), "good")
    defect_strata = _strata(Path(defect), "defect") if defect else {}
    n_good, n_defect = (sum(len(v) for v in s.values()) for s in (good_strata, defect_strata))
    want_defect = min(n_defect, round(count * defect_fraction)) if defect_strata else 0
    if defect_strata and defect_fraction > 0:
        want_defect = max(want_defect, min(1, n_defect))
    want_good = min(n_good, count - want_defect)
    want_defect = min(n_defect, count - want_good)  # fill from defects when good images run short
    rng = np.random.default_rng(seed)
    chosen: list[Path] = []
    per_stratum: dict[str, int] = {}
    for strata, want in ((good_strata, want_good), (defect_strata, want_defect)):
        allocation = _allocate(want, {key: len(paths) for key, paths in strata.items()})
        for key in sorted(strata):
            picked = _systematic(strata[key], allocation[key], rng)
            per_stratum[key] = len(picked)
            chosen.extend(picked)
    return Selection(
        chosen, per_stratum, {key: len(paths) for key, paths in {**good_strata, **defect_strata}.items()}, seed
    )


def rectification_of(calibration_yaml: Path) -> Rectification | None:
    """The rectification a camera's calibration file applies (no bundle needed: only the geometry is read)."""
    calibration_yaml = Path(calibration_yaml)
    if not calibration_yaml.is_file():
        raise DataError(f"{calibration_yaml}: calibration file does not exist")
    data = yaml.safe_load(calibration_yaml.read_text())
    if not isinstance(data, dict) or "rectification" not in data:
        raise DataError(f"{calibration_yaml}: not a calibration file (no 'rectification' key)")
    rect = data["rectification"]
    return Rectification.from_dict(rect, f"{calibration_yaml}: key 'rectification'") if rect is not None else None


def write_rectified_copies(selection: Selection, rectification: Rectification, folder: Path) -> Selection:
    """INT8 ranges must come from what the engine will see: on a rectifying camera, the rectified frames."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for index, path in enumerate(progress(selection.paths, desc="rectify", unit="img")):
        target = folder / f"{index:05d}_{path.stem}.png"
        image = rectification.apply(read_image_rgb(path))
        if not cv2.imwrite(str(target), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise DataError(f"{target}: cannot write the rectified copy")
        copies.append(target)
    return Selection(copies, selection.per_stratum, selection.available, selection.seed)


def write_list(selection: Selection, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    base = out.parent.resolve()
    lines = [f"# INT8 calibration images: {len(selection.paths)} (seed {selection.seed}); per stratum taken/available:"]
    lines += [f"#   {key}: {taken}/{selection.available[key]}" for key, taken in selection.per_stratum.items()]
    for path in selection.paths:
        resolved = path.resolve()
        try:
            lines.append(resolved.relative_to(base).as_posix())
        except ValueError:
            lines.append(str(resolved))
    out.write_text("\n".join(lines) + "\n")
    return out
