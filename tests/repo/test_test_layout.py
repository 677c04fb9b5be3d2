"""The tests show the layers: tests/edge and tests/calibration (and the support they use) import no torch,
training layer, matplotlib or tqdm, so they run in the station venv; no test module imports another."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
STATION_FORBIDDEN = ("torch", "onen.train", "matplotlib", "tqdm", "sklearn")
# the one bridge to the training layer: it imports train lazily, only where no ready-made fixtures are handed over
BRIDGE = TESTS / "support" / "prebuilt.py"


def imported_names(path: Path) -> list[tuple[int, str]]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.append((node.lineno, node.module or ""))
    return names


def test_station_tests_and_their_support_import_no_torch_train_matplotlib_or_tqdm():
    files = [TESTS / "conftest.py", *sorted((TESTS / "support").rglob("*.py"))]
    files += [path for folder in ("edge", "calibration") for path in sorted((TESTS / folder).rglob("*.py"))]
    offenders = [
        f"{path.relative_to(TESTS)}:{line} imports {name}"
        for path in files
        if path != BRIDGE
        for line, name in imported_names(path)
        if any(name == banned or name.startswith(banned + ".") for banned in STATION_FORBIDDEN)
    ]
    assert not offenders, "\n".join(offenders)


def test_no_test_module_imports_another_test_module():
    offenders = [
        f"{path.relative_to(TESTS)}:{line} imports {name}"
        for path in sorted(TESTS.rglob("*.py"))
        for line, name in imported_names(path)
        if name.split(".")[-1].startswith(("test_", "conftest"))
    ]
    assert not offenders, "\n".join(offenders)


def test_every_test_module_lives_in_a_layer_folder():
    layers = {"edge", "calibration", "train", "e2e", "repo"}
    stray = [str(p.relative_to(TESTS)) for p in TESTS.rglob("test_*.py") if p.relative_to(TESTS).parts[0] not in layers]
    assert not stray, stray
