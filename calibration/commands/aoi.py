"""`onen aoi`: write an AOI mask PNG at camera resolution (from polygons or a reference image) + a preview."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "aoi",
        help="author an area-of-interest mask (PNG at camera resolution) and a preview overlay",
        description=(
            "From polygons: --polygon FILE.yaml|json (a list of [x, y] points, a list of polygons, or a mapping with "
            "polygons, optional exclude and size) with --size WxH (or --image, or the file's size). From a reference "
            "image: --reference IMAGE, thresholded (otsu or a grey level), largest component, holes filled, then "
            "--erode/--dilate px. Writes OUT and OUT's .preview.png next to it."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--polygon", type=Path, help="YAML/JSON polygon file (camera pixel coordinates)")
    source.add_argument("--reference", type=Path, help="reference image of the part taken by the camera")
    parser.add_argument("--size", metavar="WxH", help="camera resolution for --polygon")
    parser.add_argument("--image", type=Path, help="a camera image: size for --polygon and background of the preview")
    parser.add_argument("--threshold", default="otsu", help="--reference: grey level 0..255 or 'otsu' (default)")
    parser.add_argument("--invert", action="store_true", help="--reference: the part is darker than the background")
    parser.add_argument("--erode", type=int, default=0, help="shrink the AOI by N px (keep away from the part's edge)")
    parser.add_argument("--dilate", type=int, default=0, help="grow the AOI by N px")
    parser.add_argument("--out", required=True, type=Path, help="mask PNG to write, e.g. calib/cam1.aoi.png")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from onen.calibration.aoi import (
        load_polygons,
        mask_from_polygons,
        mask_from_reference,
        refine,
        write_mask,
        write_preview,
    )
    from onen.edge.errors import DataError
    from onen.edge.images import read_image_rgb

    if args.erode < 0 or args.dilate < 0:
        raise DataError("--erode and --dilate take a radius in px >= 0")
    if args.out.suffix.lower() != ".png":
        raise DataError(f"--out {args.out}: the AOI mask must be a .png (lossless)")
    background = read_image_rgb(args.image) if args.image else None
    if args.reference:
        background = read_image_rgb(args.reference)
        mask = mask_from_reference(
            background, args.threshold, args.invert, args.erode, args.dilate, source=str(args.reference)
        )
    else:
        spec = load_polygons(args.polygon)
        size = (
            _size(args.size)
            if args.size
            else (background.shape[1], background.shape[0])
            if background is not None
            else spec.size
        )
        if size is None:
            raise DataError(
                f"{args.polygon}: the camera resolution is unknown; give --size WxH, --image, or 'size' in the file"
            )
        if background is not None and (background.shape[1], background.shape[0]) != size:
            raise DataError(
                f"--image {args.image} is {background.shape[1]}x{background.shape[0]} but the AOI size is "
                f"{size[0]}x{size[1]}"
            )
        mask = mask_from_polygons(spec, size, source=str(args.polygon))
        mask = refine(mask, args.erode, args.dilate, str(args.polygon))
    write_mask(mask, args.out)
    preview = write_preview(mask, args.out, background)
    print(
        f"wrote {args.out} ({mask.shape[1]}x{mask.shape[0]}, {mask.mean():.1%} of the image inside the AOI) and "
        f"{preview}"
    )
    return 0


def _size(text: str) -> tuple[int, int]:
    from onen.calibration.commands.calibrate import parse_size

    size = parse_size(text, "--size")
    assert size is not None  # parse_size gives None only for no text
    return size
