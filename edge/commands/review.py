"""`onen review --config station.yaml [--fleet] [--listen host:port]`: the review page of a station (or a fleet).

Needs the `[review]` extra (Starlette, uvicorn); imported inside the handler so `onen` works without it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "review",
        help="serve the review page (live tiles, defect archive, stats, model) of a station",
        description="Subscribe to the station's MQTT topics, read its defect archive read-only and serve a page "
        "(review.listen in the YAML, 127.0.0.1:8765 by default). A process of its own: it never slows the station.",
    )
    parser.add_argument("--config", "-c", type=Path, required=True, help="the station YAML file")
    parser.add_argument(
        "--fleet",
        action="store_true",
        help="every station under the MQTT prefix (a central broker): one row per station",
    )
    parser.add_argument(
        "--listen", default=None, help="host:port overriding review.listen (a token is still required beyond loopback)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from onen.edge.cli import UsageError
    from onen.edge.config import load_config
    from onen.edge.extras import missing_module_message

    config = load_config(args.config)
    host, port = config.review.host, config.review.port
    if args.listen:
        host, _, port_text = args.listen.rpartition(":")
        host = host.strip("[]")
        if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise UsageError(f"--listen: expected host:port, e.g. 127.0.0.1:8765, got {args.listen!r}")
        port = int(port_text)
        if host not in LOOPBACK and not config.review.token:
            raise UsageError(
                f"--listen {args.listen}: a listener beyond loopback needs review.token_env or review.token_file"
            )
    try:
        from onen.edge.review.server import serve
    except ImportError as error:
        raise UsageError(f"the review page: {missing_module_message(error.name or 'starlette')}") from None
    return serve(config, host, port, fleet=args.fleet)
