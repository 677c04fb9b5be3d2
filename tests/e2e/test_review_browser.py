"""The review page in a real browser: Debian's Chromium driven by Playwright, against a real mosquitto, the
daemon on the small bundle with a file camera, and `onen review` on free loopback ports.

Playwright's own browser download needs the internet, so the system Chromium is launched by path
(scripts/bootstrap.sh installs it). Screenshots of every page go to the test's tmp folder and to
screenshots-latest/ in the checkout (git-ignored) for a person to look at.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from support import REPO
from support.daemon import Collector, file_camera, start_daemon, write_station, write_video
from support.review import ReviewProcess, good_then_defect

from onen.edge.bundle import load_bundle
from onen.edge.local_broker import MosquittoBroker

pytestmark = pytest.mark.slow  # long end-to-end runs: `pytest -m 'not slow'` leaves them out

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        f"Debian's Chromium is not installed at {CHROMIUM} (apt-get install chromium; scripts/bootstrap.sh does)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
pytest.importorskip("starlette", reason="the [review] extra (starlette, uvicorn) is not installed")

LATEST = REPO / "screenshots-latest"


@pytest.fixture()
def broker():
    with MosquittoBroker() as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-proxy-server"])
        yield launched
        launched.close()


class Page:
    """A browser page that records every request it makes, and saves screenshots."""

    def __init__(self, browser, folder: Path):
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.requests: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        LATEST.mkdir(exist_ok=True)

    def shot(self, name: str) -> Path:
        path = self.folder / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        shutil.copy(path, LATEST / path.name)
        return path

    def assert_only_loopback(self) -> None:
        outside = [url for url in self.requests if urlparse(url).hostname != "127.0.0.1"]
        assert self.requests and not outside, f"requests beyond 127.0.0.1: {outside}"

    def close(self) -> None:
        self.page.close()


def _tile_counts(page, camera: str) -> str:
    return page.locator(f'.tile[data-camera="{camera}"] dd').nth(4).inner_text()


def test_live_defects_stats_and_model_pages(tmp_path, broker, tiny_bundle, browser):
    video = write_video(tmp_path / "v.avi", good_then_defect(tiny_bundle, 10, 8), 18, fps=6)
    config = write_station(tmp_path, broker.port, tiny_bundle, [file_camera("cam", video, realtime=True)])
    manifest = load_bundle(tiny_bundle).manifest
    collector = Collector(broker.host, broker.port)
    with ReviewProcess(config) as review:
        review.wait_state(lambda s: s["broker_connected"])
        view = Page(browser, tmp_path / "screenshots")
        page = view.page
        page.goto(review.url + "/")
        assert page.locator("#station-name").inner_text() == "t1"
        page.wait_for_function("document.getElementById('model-name').textContent.length > 0")
        assert page.locator("#model-name").inner_text() == f"model {manifest.name} {manifest.version}"
        page.wait_for_selector("#conn:text('live')")

        daemon, thread = start_daemon(config, wait_connected_s=10, exit_when_finished=True)
        assert collector.wait(lambda c: any(r["verdict"] == "defect" for r in c.results()), timeout=60), (
            "the station published a defect"
        )
        page.wait_for_selector('.tile[data-camera="cam"][data-verdict="defect"]', timeout=2000)
        assert page.locator('.tile[data-camera="cam"] .verdict').inner_text() == "DEFECT"
        thread.join(120)
        assert collector.wait(lambda c: len(c.on("/result")) == 18)
        results = [json.loads(p) for p, _ in collector.on("/result")]
        expected = (
            f"ok {sum(r['verdict'] == 'ok' for r in results)} · defect {sum(r['verdict'] == 'defect' for r in results)}"
        )
        page.wait_for_function(
            "([sel, text]) => document.querySelectorAll(sel)[4]?.textContent === text",
            arg=['.tile[data-camera="cam"] dd', expected],
        )
        assert _tile_counts(page, "cam") == expected
        assert page.locator('.tile[data-camera="cam"] .strip span').count() == 18
        assert (
            page.locator(".banner.defaults")
            .inner_text()
            .startswith("Camera cam runs on the model's default thresholds")
        )
        page.wait_for_function(
            "document.querySelector('.tile img').complete && document.querySelector('.tile img').naturalWidth > 0"
        )
        view.shot("live")

        archived = sorted((tmp_path / "archive").glob("*/*/*_result.json"))
        page.goto(review.url + "/defects")
        page.wait_for_selector(".card")
        assert page.locator(".card").count() == min(24, len(archived)) > 0
        view.shot("defects")
        page.locator(".card").first.click()
        page.wait_for_selector("#detail-overlay")
        page.wait_for_function(
            "['detail-overlay', 'detail-frame'].every((id) => document.getElementById(id).naturalWidth > 0)"
        )
        shown = json.loads(page.locator("#result-json").inner_text())
        assert shown["verdict"] == "defect" and shown["regions"]
        assert (
            page.locator("#regions rect").count()
            == len(shown["regions"])
            == page.locator("#region-table tbody tr").count()
        )
        page.get_by_role("button", name="false reject").click()
        page.wait_for_selector("#mark-status:text('marked: false reject')")
        view.shot("defect-detail")

        page.goto(review.url + "/stats")
        page.wait_for_selector("#histogram span")
        assert page.locator("#histogram span").count() == 40
        assert "last 18 parts" in page.locator("h2").first.inner_text()
        shift_counts = [int(t) for t in page.locator("#shifts tbody td:nth-child(3)").all_inner_texts()]
        assert sum(shift_counts) == sum(r["verdict"] == "defect" for r in results)
        view.shot("stats")

        page.goto(review.url + "/model")
        page.wait_for_selector("#calibration tbody tr")
        assert f"{manifest.name} {manifest.version}" in page.locator("section.model h2").inner_text()
        assert "default thresholds" in page.locator('#calibration tr[data-camera="cam"]').inner_text()
        assert "1 false rejects" in page.locator('#calibration tr[data-camera="cam"]').inner_text()
        assert page.locator("#events tbody tr").count() >= 2
        view.shot("model")
        view.assert_only_loopback()
        view.close()
    collector.close()


def test_broker_restart_shows_offline_and_recovers_without_reload(tmp_path, broker, tiny_bundle, browser):
    video = write_video(tmp_path / "v.avi", good_then_defect(tiny_bundle, 4, 2), 6, fps=5)
    config = write_station(tmp_path, broker.port, tiny_bundle, [file_camera("cam", video, realtime=True, loop=True)])
    with ReviewProcess(config) as review:
        review.wait_state(lambda s: s["broker_connected"])
        daemon, thread = start_daemon(config, wait_connected_s=10)
        try:
            view = Page(browser, tmp_path / "screenshots")
            page = view.page
            page.goto(review.url + "/")
            page.wait_for_selector('.tile[data-camera="cam"][data-verdict]')
            page.evaluate("window.__sameDocument = true")
            assert page.locator("#banner-offline").count() == 0

            broker.stop()
            page.wait_for_selector("#banner-offline", timeout=15000)
            assert "offline" in page.locator("#banner-offline").inner_text()
            view.shot("offline")
            counts_before = _tile_counts(page, "cam")

            broker.start()
            page.wait_for_selector("#banner-offline", state="detached", timeout=20000)
            page.wait_for_function(
                "([sel, before]) => document.querySelectorAll(sel)[4]?.textContent !== before",
                arg=['.tile[data-camera="cam"] dd', counts_before],
                timeout=20000,
            )
            assert page.evaluate("window.__sameDocument") is True, "the page recovered without a reload"
            view.shot("recovered")
            view.assert_only_loopback()
            view.close()
        finally:
            daemon.request_stop()
            thread.join(30)


def test_names_render_as_text_never_as_markup(tmp_path, broker, tiny_bundle, browser):
    video = write_video(tmp_path / "v.avi", good_then_defect(tiny_bundle, 1, 1), 2)
    config = write_station(tmp_path, broker.port, tiny_bundle, [file_camera("cam", video)])
    hostile = ["<script>", "<img src=x onerror=window.__pwned=1>"]
    with ReviewProcess(config) as review:
        review.wait_state(lambda s: s["broker_connected"])
        view = Page(browser, tmp_path / "screenshots")
        page = view.page
        dialogs = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(review.url + "/")
        page.wait_for_selector("#conn:text('live')")
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="hostile-names")
        client.connect(broker.host, broker.port)
        client.loop_start()
        for seq, name in enumerate(hostile):
            result = {
                "verdict": "defect",
                "seq": seq,
                "score": 0.9,
                "threshold": 0.5,
                "class": {"name": "<b>bold</b>"},
                "captured_at": "2026-01-01T00:00:00Z",
                "model": {"name": "<i>m</i>", "version": "1", "backend": "x"},
            }
            client.publish(f"onen/t1/{name}/result", json.dumps(result), qos=1).wait_for_publish(5)
            client.publish(f"onen/t1/{name}/status", json.dumps({"status": "lost"}), qos=1).wait_for_publish(5)
        page.wait_for_function("document.querySelectorAll('.tile').length === 2")
        # each camera's status message comes after its result: wait for both banners, not only the tiles
        page.wait_for_function("document.querySelectorAll('.banner.lost').length === 2")
        titles = sorted(page.locator(".tile h2").all_inner_texts())
        assert titles == sorted(hostile)
        assert page.locator("main script, main img[src='x'], main b, #banners b").count() == 0
        assert page.locator(".tile dd").nth(1).inner_text() == "<b>bold</b>"
        assert sorted(page.locator(".banner.lost").all_inner_texts()) == sorted(
            f"Camera {n} lost (lost)" for n in hostile
        )
        assert page.evaluate("window.__pwned") is None and not dialogs
        view.shot("hostile-names")
        view.assert_only_loopback()
        view.close()
        client.loop_stop()
        client.disconnect()
