"""`onen demo` as a user runs it (a real subprocess), with the demo model cache pre-filled by tiny_bundle."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys


def test_demo_runs_end_to_end_and_exits_0(tmp_path, tiny_bundle):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "demo.json").write_text(json.dumps({"bundle": str(tiny_bundle)}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "edge.cli", "demo", "--frames", "16", "--cache-dir", str(cache),
                           "--workdir", str(tmp_path / "work")], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"model: reusing {tiny_bundle}" in out
    lines = [line for line in out.splitlines() if line.strip().startswith("seq ")]
    assert len(lines) == 16 and all(re.search(r"(ok|defect) +score \d\.\d{3}", line) for line in lines)
    summary = re.search(r"summary: 16 results \((\d+) ok, (\d+) defect\); verdict matches the generated truth on (\d+)/16", out)
    assert summary, out
    assert int(summary.group(3)) >= 12, "the small model tells generated good and defective parts apart"
    assert "latency p50 (ms):" in out and "frames/s" in out
    assert "availability: online -> offline" in out
    assert (tmp_path / "work" / "station.yaml").is_file()


def test_demo_refuses_a_bad_frame_count(tmp_path, tiny_bundle):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "demo.json").write_text(json.dumps({"bundle": str(tiny_bundle)}))
    done = subprocess.run([sys.executable, "-m", "edge.cli", "demo", "--frames", "0", "--cache-dir", str(cache)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--frames must be at least 1" in done.stderr and "Traceback" not in done.stderr
