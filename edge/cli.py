"""The one `onen` console command.

Each subcommand lives in the package that owns it, as a module in `<package>/commands/` with a
`register(subparsers)` function, announced as an entry point of group `onen.commands` (pyproject.toml).
Modules must import cheaply (no torch at import time): on a station without the [train] extra, a
training command still lists, and running it names the extra to install.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from importlib.metadata import PackageNotFoundError, entry_points, version

from onen.edge.errors import OnenError
from onen.edge.extras import missing_module_message

ENTRY_POINT_GROUP = "onen.commands"


class UsageError(OnenError):
    """A mistake of the user's (bad path, bad value): printed without a traceback, exit status 2."""


def installed_version() -> str:
    """The installed distribution's version (pyproject.toml's, once installed)."""
    try:
        return version("onen-inspect")
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def command_modules() -> list[str]:
    """Modules that hold a `register`: the installed entry points, sorted by name."""
    return [e.value.split(":")[0] for e in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)]


def _discover(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for module_name in command_modules():
        register = getattr(importlib.import_module(module_name), "register", None)
        if register is not None:
            register(subparsers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onen", description="Surface inspection: train, export, calibrate, run.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}")
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
        sys.stdout.flush()  # a closed pipe shows here, not as a traceback at exit
    except BrokenPipeError:
        _quiet_stdout()
        return 141  # 128 + SIGPIPE, as a shell reports `onen ... | head -1`
    except OnenError as error:
        print(f"onen {args.command}: error: {error}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] == "onen":
            raise
        print(f"onen {args.command}: error: {missing_module_message(error.name)}", file=sys.stderr)
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
        pass  # stdout is not a real file (captured in tests): nothing to redirect
    finally:
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
