"""`onen int8-images`: choose the INT8 calibration image list for `onen build-engine` (TensorRT)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "int8-images",
        help="select a stratified, reproducible INT8 calibration image list (good + defective)",
        description=(
            "Picks --count images: (1 - --defect-fraction) good and --defect-fraction defective, spread over the "
            "sub-folders proportionally and evenly along each folder's sorted names. Same inputs and --seed give "
            "the same list. Writes one path per line (relative to the list file)."
        ),
    )
    parser.add_argument("--good", required=True, type=Path, help="folder of good images (sub-folders are strata)")
    parser.add_argument(
        "--defect", type=Path, help="folder of defective images (sub-folders, e.g. classes, are strata)"
    )
    parser.add_argument("--count", type=int, default=500, help="images to select (default 500; TensorRT suggests ~500)")
    parser.add_argument("--defect-fraction", type=float, default=0.25, help="share of defective images (default 0.25)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--calibration",
        type=Path,
        help="camera calibration YAML: when it rectifies, write rectified copies (as the engine sees them) next to "
        "the list and list those",
    )
    parser.add_argument("--out", required=True, type=Path, help="list file to write, e.g. int8.txt")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from onen.calibration.int8_selection import rectification_of, select_int8_images, write_list, write_rectified_copies

    rectification = rectification_of(args.calibration) if args.calibration else None
    selection = select_int8_images(args.good, args.defect, args.count, args.defect_fraction, args.seed)
    if rectification is not None:
        folder = args.out.with_name(args.out.stem + ".images")
        selection = write_rectified_copies(selection, rectification, folder)
        print(f"rectified copies in {folder}/ ({rectification.width}x{rectification.height})")
    write_list(selection, args.out)
    summary = ", ".join(f"{key} {taken}/{selection.available[key]}" for key, taken in selection.per_stratum.items())
    print(f"wrote {args.out}: {len(selection.paths)} images ({summary})")
    if len(selection.paths) < args.count:
        print(f"note: only {len(selection.paths)} images available, fewer than --count {args.count}")
    return 0
