"""`onen review --config station.yaml [--fleet] [--listen host:port]`: the review page of a station (or a fleet).

Needs the `[review]` extra (Starlette, uvicorn); imported inside the handler so `onen` works without it.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "review", help="serve the review page (live tiles, defect archive, stats, model) of a station",
        description="Subscribe to the station's MQTT topics, read its defect archive read-only and serve a page "
                    "(review.listen in the YAML, 127.0.0.1:8765 by default). A process of its own: it never slows the station.")
    parser.add_argument("--config", "-c", type=Path, required=True, help="the station YAML file")
    parser.add_argument("--fleet", action="store_true",
                        help="every station under the MQTT prefix (a central broker): one row per station")
    parser.add_argument("--listen", default=None, help="host:port overriding review.listen (a token is still required beyond loopback)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edge.cli import UsageError
    from edge.config import load_config

    config = load_config(args.config)
    if args.listen:
        review = dataclasses.replace(config.review, listen=args.listen)
        try:
            review.port
        except (ValueError, IndexError):
            raise UsageError(f"--listen: expected host:port, got {args.listen!r}") from None
        if not review.loopback and not review.token:
            raise UsageError(f"--listen {args.listen}: a listener beyond loopback needs review.token_env or review.token_file")
        config = dataclasses.replace(config, review=review)
    try:
        from edge.review.server import serve
    except ImportError as error:
        raise UsageError(f"the review page needs the [review] extra (pip install 'onen-inspect[review]'): {error}") from None
    return serve(config, fleet=args.fleet)
