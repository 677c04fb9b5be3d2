"""`onen bench review-overhead` runs end to end: the daemon alone, with two review pages open in Debian's Chromium,
and with two bare event streams, on a real broker and a rectangular file camera."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onen.edge.cli import main as onen

pytestmark = pytest.mark.slow  # a browser and three daemon runs: `pytest -m 'not slow'` leaves it out

if not Path("/usr/bin/chromium").exists():
    pytest.skip("Debian's Chromium is not installed at /usr/bin/chromium (scripts/bootstrap.sh installs it)",
                allow_module_level=True)  # fmt: skip
pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
pytest.importorskip("starlette", reason="the [review] extra (starlette, uvicorn) is not installed")


def test_bench_review_overhead_measures_the_daemon_with_and_without_pages(tiny_bundle, tmp_path):
    out = tmp_path / "review.json"
    code = onen(
        ["bench", "review-overhead", "--bundle", str(tiny_bundle), "--frames", "24", "--repeats", "1",
         "--camera-size", "160x128", "--json", str(out)]
    )  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert report["fps_none"] > 0 and report["fps_two_pages"] > 0 and report["fps_two_streams"] > 0
    assert report["page_load_ms_median"] > 0 and report["update_samples"] >= 1
