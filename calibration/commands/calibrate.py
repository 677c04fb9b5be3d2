"""`onen calibrate`: per-camera thresholds, score normalisation, AOI and rectification from known parts."""

from __future__ import annotations

import argparse
from pathlib import Path

from onen.edge.config_models import BACKEND_KINDS


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="fit a camera's thresholds on its good (and defective) images; writes calib YAML + report",
        description=(
            "Runs the bundle on images of one camera (a folder, or frames of a video file), chooses the image "
            "threshold that keeps the false-reject rate on good parts <= --target-frr with --confidence, a pixel "
            "threshold and minimum region area that give no regions on good images, and the score normalisation "
            "(published score 0..1, decision at 0.5). Writes OUT (the YAML the daemon reads) and OUT's .report/ folder."
        ),
    )
    parser.add_argument("--bundle", required=True, type=Path, help="model bundle directory or .tar")
    parser.add_argument("--camera", required=True, help="camera name (as in the station config)")
    parser.add_argument("--good", required=True, type=Path, help="folder of good images or a video of good parts")
    parser.add_argument("--defect", type=Path, help="folder or video of defective parts (escape rate, F1 alternative)")
    parser.add_argument("--aoi", type=Path, help="AOI mask PNG at camera resolution (see `onen aoi`)")
    parser.add_argument(
        "--rectify",
        metavar="x1,y1,...,x4,y4",
        help="part corners in camera pixels: top-left, top-right, bottom-right, bottom-left",
    )
    parser.add_argument("--rectify-size", metavar="WxH", help="rectified image size (default: from the corners)")
    parser.add_argument(
        "--target-frr", type=float, default=0.005, help="false-reject rate to guarantee on good parts (default 0.005)"
    )
    parser.add_argument("--confidence", type=float, default=0.95, help="confidence of that guarantee (default 0.95)")
    parser.add_argument(
        "--backend",
        default="auto",
        choices=BACKEND_KINDS,
        help="inference backend (default auto)",
    )
    parser.add_argument("--every", type=int, default=1, help="video sources: use every N-th frame (default 1)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", required=True, type=Path, help="calibration YAML to write, e.g. calib/NAME.yaml")
    parser.add_argument(
        "--push-to", type=Path, metavar="STATION.yaml", help="then send it to the running station of this config (MQTT)"
    )
    parser.add_argument(
        "--push-wait", type=float, default=10.0, help="seconds to wait for the station's answer (default 10)"
    )
    parser.set_defaults(handler=run)


def parse_size(text: str | None, option: str) -> tuple[int, int] | None:
    from onen.edge.sizes import parse_pixel_size

    return None if text is None else parse_pixel_size(text, option, "WIDTHxHEIGHT", "1280x960")


def run(args: argparse.Namespace) -> int:
    from onen.calibration.camera import CalibrationRequest, calibrate_camera
    from onen.edge.rectify import Rectification

    rectification = (
        Rectification.parse(args.rectify, parse_size(args.rectify_size, "--rectify-size")) if args.rectify else None
    )
    request = CalibrationRequest(
        bundle=args.bundle,
        camera=args.camera,
        good=args.good,
        defect=args.defect,
        out=args.out,
        aoi=args.aoi,
        rectification=rectification,
        target_frr=args.target_frr,
        confidence=args.confidence,
        backend=args.backend,
        every=args.every,
        batch_size=args.batch_size,
    )
    outcome = calibrate_camera(request)
    chosen = outcome.report["image_threshold"]
    at = outcome.report["at_threshold"]
    print(
        f"camera {args.camera}: {outcome.report['counts']['good']} good, {outcome.report['counts']['defect']} "
        "defective images"
    )
    print(
        f"image threshold {chosen['threshold']:.6g} (raw): false-reject rate <= {chosen['frr_upper_bound']:.3%} "
        f"with {chosen['confidence']:.0%} confidence (target {chosen['target_frr']:.3%}; expected "
        f"{chosen['frr_expected']:.3%})"
    )
    if at["escape"]:
        escape = at["escape"]
        print(
            f"escape rate at that threshold: {escape['rate']:.2%} ({escape['count']}/{escape['n']}; "
            f"{escape['confidence']:.0%} CI {escape['low']:.2%}..{escape['high']:.2%})"
        )
        for folder, rate in outcome.report["escape_by_folder"].items():
            print(
                f"  {folder}: {rate['rate']:.2%} ({rate['count']}/{rate['n']}; CI "
                f"{rate['low']:.2%}..{rate['high']:.2%})"
            )
        alt = outcome.report["f1_alternative"]
        print(
            f"F1-optimal alternative: threshold {alt['threshold']:.6g}, F1 {alt['f1']:.3f}, false rejects "
            f"{alt['false_reject']['rate']:.2%}, "
            f"escapes {alt['escape']['rate']:.2%} (no FRR guarantee)"
        )
    pixel = outcome.report["pixel"]
    regions = (
        f"; defective images with a region: {pixel['defect_images_with_regions']}/{pixel['defect_images']}"
        if pixel["defect_images"]
        else ""
    )
    if pixel["localisation"] == "off":
        print(f"localisation: off (results carry no regions): {pixel['reason']}")
    else:
        print(
            f"localisation: regions; pixel threshold {pixel['pixel_threshold']:.4g} (map maximum "
            f"{pixel['map_max']:.4g}), min region area "
            f"{pixel['min_region_area']} px, good images with a region: {pixel['good_images_with_regions']}{regions}"
        )
    for warning in outcome.report["warnings"]:
        print(f"WARNING: {warning}")
    files = ", ".join(["report.json", *outcome.report["files"]])
    print(f"wrote {outcome.yaml_path} and {outcome.report_dir}/ ({files})")
    if args.push_to:
        from onen.calibration.commands.push_calibration import push_and_report

        return push_and_report(outcome.yaml_path, args.push_to, args.camera, args.push_wait)
    return 0
