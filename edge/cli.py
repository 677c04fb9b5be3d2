"""The one `onen` console command.

Each subcommand lives in the package that owns it, as a module in `<package>/commands/` with a
`register(subparsers)` function. Modules must import cheaply (no torch at import time), so that an
edge station without the `[train]` extra still gets a working `onen run`.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys

from edge.errors import OnenError

COMMAND_PACKAGES = ("train.commands", "calibration.commands", "edge.commands", "benchmarks.commands")


class UsageError(OnenError):
    """A mistake of the user's (bad path, bad value): printed without a traceback, exit status 2."""


def _discover(subparsers: argparse._SubParsersAction) -> None:
    for package_name in COMMAND_PACKAGES:
        try:
            package = importlib.import_module(package_name)
        except ImportError:
            continue
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
            module = importlib.import_module(f"{package_name}.{info.name}")
            register = getattr(module, "register", None)
            if register is not None:
                register(subparsers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onen", description="Surface inspection: train, export, calibrate, run.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    _discover(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        result = args.handler(args)
        sys.stdout.flush()                # a closed pipe shows here, not as a traceback at exit
    except BrokenPipeError:
        _quiet_stdout()
        return 141                        # 128 + SIGPIPE, as a shell reports `onen ... | head -1`
    except OnenError as error:
        print(f"onen {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


def _quiet_stdout() -> None:
    """The reader of our output went away (`| head`): point stdout at /dev/null so the interpreter's last
    flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass                              # stdout is not a real file (captured in tests): nothing to redirect
    finally:
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
