"""`onen bench NAME`: speed and memory targets live here, never in unit tests.

Each benchmark is a module `benchmarks/<name>.py` with `add_arguments(parser)` and `main(args)`;
it prints its figures (medians and ratios) and may write them as JSON with `--json`. A module without
them (e.g. real_sets, the fixed splits the accuracy bench uses) is a helper, not a benchmark.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil

from onen import benchmarks


def _benchmark_names() -> list[str]:
    return sorted(
        i.name for i in pkgutil.iter_modules(benchmarks.__path__) if not i.ispkg and not i.name.startswith("_")
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("bench", help="run a benchmark and print its figures")
    names = parser.add_subparsers(dest="benchmark", metavar="NAME")
    names.required = True
    for name in _benchmark_names():
        module = importlib.import_module(f"onen.benchmarks.{name}")
        if not hasattr(module, "main"):
            continue
        sub = names.add_parser(
            name.replace("_", "-"), help=(module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else None
        )
        module.add_arguments(sub)
        sub.add_argument("--json", help="also write the figures to this JSON file")
        sub.set_defaults(handler=module.main)
