"""`onen demo` as a user runs it (a real subprocess), with the demo model cache pre-filled by tiny_bundle."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from onen.train.commands.demo import DEFAULT_CACHE, DEFAULT_GRDNET_CACHE, demo_key, grdnet_demo_key

pytestmark = pytest.mark.slow  # long end-to-end runs: `pytest -m 'not slow'` leaves them out


def _cache(tmp_path, bundle, key: str | None = None) -> Path:
    """The demo's cache holding `bundle` under the recipe's key (default the OneN one: tiny_bundle is small_bundle,
    seed 0, one torch thread, this code)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "demo.json").write_text(json.dumps({"bundle": str(bundle), "key": key or demo_key()}))
    return cache


def test_demo_runs_end_to_end_and_exits_0(tmp_path, tiny_bundle):
    cache = _cache(tmp_path, tiny_bundle)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "onen.edge.cli",
            "demo",
            "--frames",
            "16",
            "--cache-dir",
            str(cache),
            "--workdir",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"model: reusing {tiny_bundle}" in out
    lines = [line for line in out.splitlines() if line.strip().startswith("seq ")]
    assert all(re.search(r"(ok|defect) +score \d\.\d{3}", line) for line in lines)
    summary = re.search(
        r"summary: (\d+) results \((\d+) ok, (\d+) defect\); verdict matches the generated truth on (\d+)/(\d+)", out
    )
    assert summary, out
    results, right, of = int(summary.group(1)), int(summary.group(4)), int(summary.group(5))
    # paced at 12 fps like a live camera: a loaded machine may drop frames, and the summary says how many
    dropped = re.search(r"; (\d+) frames dropped by the camera", out)
    assert results == len(lines) == of == 16 - (int(dropped.group(1)) if dropped else 0) >= 8, out
    assert right >= 0.75 * results, "the small model tells generated good and defective parts apart"
    assert "latency p50 (ms):" in out and "frames/s" in out
    assert "availability: online -> offline" in out
    assert (tmp_path / "work" / "station.yaml").is_file()
    assert f"archive of defects: {tmp_path / 'work'}" in out

    # Without --workdir everything is removed, and no path inside the removed folder is printed.
    done = subprocess.run(
        [sys.executable, "-m", "onen.edge.cli", "demo", "--frames", "4", "--fps", "0", "--cache-dir", str(cache)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "onen-demo-" not in done.stdout and "removed with the temp dir" in done.stdout


@pytest.fixture(scope="module")
def grdnet_bundle(tmp_path_factory) -> Path:
    """A GRD-Net bundle as the demo's recipe makes it, with one epoch instead of its twelve (the tests' budget)."""
    from onen.edge.cli import main as onen
    from onen.train.commands.demo import GRDNET_FLAGS
    from onen.train.config_file import shipped_recipes
    from onen.train.tiny_data import write_tiny_dataset

    root = tmp_path_factory.mktemp("demo-grdnet")
    data = write_tiny_dataset(root / "data", seed=0, count=48, size=64)
    command = ["train", "--config", str(shipped_recipes()["grdnet"]), "--data", str(data), "--out", str(root / "run")]
    assert onen([*command, *GRDNET_FLAGS, "--epochs", "1"]) == 0
    assert onen(["export", "--run", str(root / "run"), "--out", str(root / "bundle")]) == 0
    return root / "bundle"


@pytest.mark.timeout(600)  # its fixture trains and exports a GRD-Net: about a minute, several on a loaded machine
def test_grdnet_demo_serves_a_small_grdnet_end_to_end(tmp_path, grdnet_bundle):
    """`onen demo --family grdnet`: its cache (keyed by the GRD-Net recipe), calibration, daemon, MQTT results."""
    cache = _cache(tmp_path, grdnet_bundle, grdnet_demo_key())
    command = [sys.executable, "-m", "onen.edge.cli", "demo", "--family", "grdnet", "--frames", "8", "--fps", "0"]
    done = subprocess.run(
        [*command, "--cache-dir", str(cache), "--workdir", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    out = done.stdout
    assert f"model: reusing {grdnet_bundle}" in out
    assert re.search(r"calibration: \d+ good parts -> image threshold", out)
    lines = [line for line in out.splitlines() if line.strip().startswith("seq ")]
    assert len(lines) == 8 and all(re.search(r"(ok|defect) +score \d\.\d{3}", line) for line in lines)
    assert re.search(r"summary: 8 results .*; \d+ defects detected \(the model learnt no defect classes\)", out)
    assert "availability: online -> offline" in out


def test_demo_cache_is_where_readme_says_and_keyed_by_the_recipe(tmp_path, tiny_bundle, capsys):
    from onen.train.commands.demo import demo_bundle

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert str(DEFAULT_CACHE).replace(str(Path.home()), "~") in readme
    assert str(DEFAULT_GRDNET_CACHE).replace(str(Path.home()), "~") in readme
    cache = _cache(tmp_path, tiny_bundle)
    assert demo_bundle(cache) == tiny_bundle
    (cache / "demo.json").write_text(json.dumps({"bundle": str(tiny_bundle), "key": "made-by-older-code"}))
    assert demo_bundle(cache) != tiny_bundle  # another recipe's model is not reused: trained again
    assert "made by recipe made-by-older-code" in capsys.readouterr().out


def test_demo_refuses_a_bad_frame_count(tmp_path, tiny_bundle):
    cache = _cache(tmp_path, tiny_bundle)
    done = subprocess.run(
        [sys.executable, "-m", "onen.edge.cli", "demo", "--frames", "0", "--cache-dir", str(cache)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "--frames must be at least 1" in done.stderr and "Traceback" not in done.stderr


def test_the_small_model_does_not_depend_on_the_thread_count(tmp_path, tiny_bundle):
    """The demo's (and the tests') model is the same whatever OMP_NUM_THREADS or torch's threads say."""
    from onen.edge.bundle import load_bundle

    code = (
        "import sys, torch; torch.set_num_threads(2); from onen.train.recipes import small_bundle; "
        "print(small_bundle(sys.argv[1], seed=0))"
    )
    env = dict(os.environ, OMP_NUM_THREADS="2", ONEN_SMALL_BUNDLE_CACHE="off")
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "again")], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    again, first = load_bundle(done.stdout.strip().splitlines()[-1]), load_bundle(tiny_bundle)
    assert again.onnx_sha256 == first.onnx_sha256
