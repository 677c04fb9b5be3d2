"""`onen rectify`: find (or check) the four corners that rectify a tilted camera's view of the part."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "rectify",
        help="find the part's four corners on a reference image and preview the rectified view",
        description=(
            "Finds the part on --reference (threshold, largest component) and its four corners, or takes them from "
            "--corners; prints the value for `onen calibrate --rectify`, and writes OUT (the rectified view, as the "
            "model will see it before resizing) and OUT's .corners.png (the corners drawn on the reference)."
        ),
    )
    parser.add_argument("--reference", required=True, type=Path, help="a camera image of the part")
    parser.add_argument("--corners", metavar="x1,y1,...,x4,y4", help="check these corners instead of finding them")
    parser.add_argument("--threshold", default="otsu", help="grey level 0..255 or 'otsu' (default) to find the part")
    parser.add_argument("--invert", action="store_true", help="the part is darker than the background")
    parser.add_argument("--size", metavar="WxH", help="rectified size (default: from the corners)")
    parser.add_argument("--out", required=True, type=Path, help="rectified preview PNG to write")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np

    from onen.calibration.aoi import find_part_corners, mask_from_reference
    from onen.calibration.commands.calibrate import parse_size
    from onen.edge.images import read_image_rgb
    from onen.edge.rectify import Rectification

    image = read_image_rgb(args.reference)
    size = parse_size(args.size, "--size")
    if args.corners:
        rect = Rectification.parse(args.corners, size)
    else:
        mask = mask_from_reference(image, args.threshold, args.invert, source=str(args.reference))
        corners = find_part_corners(mask, str(args.reference))
        width, height = size or (0, 0)
        rect = Rectification(corners=tuple(map(tuple, np.round(corners, 1).tolist())), width=width, height=height)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(rect.apply(image), cv2.COLOR_RGB2BGR))
    drawn = image.copy()
    points = np.round(np.asarray(rect.corners)).astype(np.int32)
    cv2.polylines(drawn, [points], True, (255, 230, 0), 2)
    for label, (x, y) in zip(("1 TL", "2 TR", "3 BR", "4 BL"), points, strict=True):
        cv2.circle(drawn, (int(x), int(y)), 5, (255, 0, 0), -1)
        cv2.putText(drawn, label, (int(x) + 6, int(y) - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 0, 0), 1)
    corners_png = args.out.with_name(args.out.stem + ".corners.png")
    cv2.imwrite(str(corners_png), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
    value = ",".join(f"{v:g}" for point in rect.corners for v in point)
    print(f"--rectify {value} --rectify-size {rect.width}x{rect.height}")
    print(f"wrote {args.out} and {corners_png}")
    return 0
