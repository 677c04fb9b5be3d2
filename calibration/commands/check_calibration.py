"""`onen check-calibration`: are fresh good parts still rejected no more often than the calibration promised?"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from onen.edge.config_models import BACKEND_KINDS


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "check-calibration",
        help="run fresh images of a camera through its calibration and test the false-reject rate against its bound",
        description=(
            "Runs the bundle on fresh good (and defective) images exactly like the station, counts false rejects and "
            "tests them against the calibration's stated bound (one-sided exact binomial test at --alpha). "
            "Exit status 0: consistent; 1: significantly more false rejects than promised, recalibrate."
        ),
    )
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--calibration", required=True, type=Path, help="calibration YAML of the camera")
    parser.add_argument("--good", required=True, type=Path, help="folder or video of fresh good parts")
    parser.add_argument("--defect", type=Path, help="folder or video of fresh defective parts")
    parser.add_argument("--backend", default="auto", choices=BACKEND_KINDS)
    parser.add_argument("--every", type=int, default=1, help="video sources: use every N-th frame")
    parser.add_argument("--alpha", type=float, default=0.01, help="significance of the test (default 0.01)")
    parser.add_argument("--json", type=Path, help="also write the result as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from onen.calibration.verify import verify_calibration

    report = verify_calibration(
        args.bundle, args.calibration, args.good, args.defect, args.backend, args.every, args.alpha
    )
    frr = report.false_reject
    print(
        f"camera {report.camera}: {frr.count}/{frr.n} fresh good parts rejected = {frr.rate:.3%} "
        f"(95% CI {frr.low:.3%}..{frr.high:.3%}); calibration promised <= {report.stated_frr_bound:.3%}; p = "
        f"{report.p_value:.3g}"
    )
    if report.escape is not None:
        escape = report.escape
        calibrated = (
            f" (at calibration {report.calibrated_escape_rate:.2%})"
            if report.calibrated_escape_rate is not None
            else ""
        )
        print(
            f"escape rate {escape.rate:.2%} ({escape.count}/{escape.n}; 95% CI "
            f"{escape.low:.2%}..{escape.high:.2%}){calibrated}"
        )
    if args.json:
        args.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    if report.consistent:
        print("consistent with the calibration")
        return 0
    print(
        f"significantly more false rejects than the calibration promised (p < {args.alpha:g}): recalibrate this camera"
    )
    return 1
