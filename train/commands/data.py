"""`onen data synth`: write the procedural AOI benchmark; `onen data check`: read and validate a data set."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("data", help="generate the synthetic AOI benchmark, or check a data set")
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")
    actions.required = True

    synth = actions.add_parser(
        "synth",
        help="write the procedural AOI benchmark (CSV manifest, images, masks, AOI masks, splits)",
        description="Parts on cluttered backgrounds; marks inside the AOI are defects (label 1), the same marks "
        "outside the AOI are not (label 0). Writes OUT/manifest.csv (image,label,class,mask,aoi,split) and "
        "OUT/benchmark.json.",
    )
    synth.add_argument("--out", required=True, type=Path, help="output folder")
    synth.add_argument("--seed", type=int, default=0, help="same seed, same images (default 0)")
    synth.add_argument("--count", type=int, default=400, help="number of images (default 400)")
    synth.add_argument("--size", type=int, default=256, help="image side in px (default 256)")
    synth.add_argument("--test-fraction", type=float, default=0.25)
    synth.add_argument("--val-fraction", type=float, default=0.15)
    synth.set_defaults(handler=run_synth)

    check = actions.add_parser("check", help="read a data set (MVTec folder, class folders or CSV) and open every file")
    check.add_argument("path", type=Path, help="data set folder or CSV manifest")
    check.add_argument("--aoi", type=Path, help="one AOI mask for the whole data set")
    check.add_argument(
        "--json", action="store_true", help="print the full details as JSON instead of the one-line verdict"
    )
    check.set_defaults(handler=run_check)


def run_synth(args: argparse.Namespace) -> int:
    from onen.edge.errors import OnenError
    from onen.train.data.synth_benchmark import generate

    if args.count < 5 or args.size < 64:
        raise OnenError(f"--count must be >= 5 and --size >= 64 (got {args.count}, {args.size})")
    if not (0 <= args.test_fraction < 1 and 0 <= args.val_fraction < 1 and args.test_fraction + args.val_fraction < 1):
        raise OnenError("--test-fraction and --val-fraction must be in [0, 1) and sum below 1")
    manifest = generate(
        args.out,
        seed=args.seed,
        count=args.count,
        size=args.size,
        test_fraction=args.test_fraction,
        val_fraction=args.val_fraction,
    )
    print(f"wrote {args.count} images and {manifest}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    """One line: OK or PROBLEMS with the counts (exit 1 on orphan masks); --json for every detail."""
    from onen.train.data.completeness import check_completeness
    from onen.train.data.readers import load_index, validate

    index = load_index(args.path, aoi=args.aoi)
    report = validate(index, progress=not args.json)
    pairs = check_completeness(index)
    summary = index.summary()
    if args.json:
        print(
            json.dumps(
                {
                    "summary": summary,
                    "layout": index.meta.get("layout"),
                    "validation": report.to_dict(),
                    **pairs.to_dict(),
                },
                indent=2,
            )
        )
    else:
        defects = sum(1 for s in index.samples if s.label == 1)
        verdict = "PROBLEMS" if pairs.orphan_masks else "OK"
        print(
            f"{verdict}: {args.path}: {summary['images']} images ({summary['images'] - defects} good, {defects} "
            "defective in "
            f"{len(index.class_names) - 1} class(es)), {summary['with_mask']} with a mask; orphan masks: "
            f"{len(pairs.orphan_masks)}; "
            f"defective images without a mask: {len(pairs.defects_without_mask)}"
            + (f"; first orphan: {pairs.orphan_masks[0]}" if pairs.orphan_masks else "")
            + " (--json for details)"
        )
    return 1 if pairs.orphan_masks else 0
