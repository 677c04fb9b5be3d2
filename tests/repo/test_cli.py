"""The `onen` CLI: edge names no other package, commands come from entry points, `onen --help` lists them."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("onen.train", "onen.calibration", "onen.benchmarks", "torch", "matplotlib", "tqdm")


def test_edge_source_imports_no_train_calibration_or_torch():
    """Anywhere in edge/, lazy imports included (edge/ruff.toml says the same to ruff)."""
    offenders = []
    for path in sorted((ROOT / "edge").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            offenders += [
                f"{path.relative_to(ROOT)}:{node.lineno} imports {n}"
                for n in names
                if any(n == f or n.startswith(f + ".") for f in FORBIDDEN)
            ]
    assert not offenders, "\n".join(offenders)


def test_pyproject_announces_every_command_module_and_each_has_register():
    announced = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["onen.commands"]
    modules = {value.split(":")[0] for value in announced.values()}
    on_disk = {
        f"{package}.{info.name}"
        for package in (
            "onen.train.commands",
            "onen.calibration.commands",
            "onen.edge.commands",
            "onen.benchmarks.commands",
        )
        for info in pkgutil.iter_modules(importlib.import_module(package).__path__)
    }
    assert modules == on_disk
    for value in announced.values():
        module, attribute = value.split(":")
        assert callable(getattr(importlib.import_module(module), attribute)), value


def test_onen_help_lists_the_commands():
    done = subprocess.run(
        [sys.executable, "-m", "onen.edge.cli", "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    for command in ("train", "export", "data", "demo", "calibrate", "check-config", "run", "push", "fleet"):
        assert command in done.stdout, command


def test_onen_version_prints_the_installed_version():
    done = subprocess.run(
        [sys.executable, "-m", "onen.edge.cli", "--version"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert done.returncode == 0 and done.stdout.strip() == f"onen {declared}", done.stdout + done.stderr


def test_a_command_whose_extra_is_missing_names_the_extra(tmp_path):
    """A station without torch: `onen export` says which extra to install, with no traceback."""
    code = "import sys; sys.modules['torch'] = None\nfrom onen.edge.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    done = subprocess.run(
        [sys.executable, "-c", code, "export", "--run", str(tmp_path), "--out", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "onen export: error:" in done.stderr and "pip install 'onen-inspect[train]'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
