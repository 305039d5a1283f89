"""End to end: Voila serves notebook 05, and a real headless Chromium uses the dashboard.

Needs Debian's `chromium` (``apt-get install chromium``; .ci/run installs it)
and the `playwright` Python package, which drives that browser through its
own bundled driver: no browser download. Skips, saying why, without them.
Set XAI_SCREENSHOT=docs/dashboard.png to keep a screenshot of the dashboard.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import xai_helpers as xh

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "05_comparison_dashboard.ipynb"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
playwright_sync = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def voila_url(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("voila") / "voila.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MPLBACKEND", None)
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "voila", str(NOTEBOOK), f"--port={port}", "--no-browser",
             "--Voila.ip=127.0.0.1"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"voila exited early:\n{log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(url + "voila/static/", timeout=2)
                break
            except urllib.error.HTTPError:
                break  # any HTTP answer means the server is up
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"voila did not start:\n{log.read_text()[-3000:]}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def page(voila_url):
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": 1100})
            pg.goto(voila_url, timeout=180_000)
            yield pg
        finally:
            browser.close()


def overlay_sources(pg) -> list[str]:
    return pg.eval_on_selector_all(".widget-image", "els => els.map(e => e.src)")


def wait_for_images(pg, count: int, timeout: float = 240) -> list[str]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        srcs = [s for s in overlay_sources(pg) if s]
        if len(srcs) == count:
            return srcs
        pg.wait_for_timeout(500)
    raise AssertionError(f"expected {count} rendered images, saw {len(overlay_sources(pg))}")


def wait_for_change(pg, before: list[str], timeout: float = 120) -> list[str]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        now = overlay_sources(pg)
        if len(now) == len(before) and all(a != b for a, b in zip(now[1:], before[1:])):
            return now
        pg.wait_for_timeout(500)
    raise AssertionError("the overlays did not change")


DEFAULTS = [name for name, m in xh.METHODS.items() if m.default]
SLOW = [name for name, m in xh.METHODS.items() if m.reports_progress]


def test_overlays_render(page):
    page.wait_for_selector("text=Compare explanation methods", timeout=240_000)
    srcs = wait_for_images(page, 1 + len(DEFAULTS))  # the original and the default methods' overlays
    assert all(s.startswith(("blob:", "data:")) for s in srcs)
    for method in xh.METHODS:  # every registered method can be ticked; the null baselines once shown
        boxes = page.get_by_role("checkbox", name=method, exact=False)
        assert (boxes.count() == 0) if xh.METHODS[method].baseline else (boxes.count() >= 1), method
    assert page.locator("text=Egyptian cat").count() >= 1


def test_baselines_shown_and_measured(page):
    wait_for_images(page, 1 + len(DEFAULTS))
    baselines = [name for name, m in xh.METHODS.items() if m.baseline]
    page.get_by_role("checkbox", name="show baselines").check()
    wait_for_images(page, 1 + len(DEFAULTS) + len(baselines))
    for name in baselines:
        assert page.get_by_role("checkbox", name=name, exact=False).count() == 1
    page.get_by_role("button", name="Measure deletion AUC").click()
    page.wait_for_selector("text=deletion AUC 0.", timeout=120_000)
    assert page.locator("text=deletion AUC").count() >= 1 + len(DEFAULTS) + len(baselines)
    page.get_by_role("checkbox", name="show baselines").uncheck()
    wait_for_images(page, 1 + len(DEFAULTS))


def test_slow_method_one_click_away(page):
    wait_for_images(page, 1 + len(DEFAULTS))
    page.get_by_role("checkbox", name=SLOW[0], exact=False).check()
    wait_for_images(page, 2 + len(DEFAULTS))
    if os.environ.get("XAI_SCREENSHOT"):
        page.locator(".widget-vbox", has_text="Compare explanation methods").first.screenshot(
            path=os.environ["XAI_SCREENSHOT"]
        )


def test_unticking_a_method_changes_the_grid(page):
    wait_for_images(page, 2 + len(DEFAULTS))
    page.get_by_role("checkbox", name=SLOW[0], exact=False).uncheck()
    wait_for_images(page, 1 + len(DEFAULTS))


def test_switching_target_changes_overlays(page):
    before = wait_for_images(page, 1 + len(DEFAULTS))
    page.locator(".widget-toggle-button").nth(1).click()  # the second most likely class
    after = wait_for_change(page, before)
    assert after[0] == before[0]  # the photo itself is unchanged


def test_non_image_upload_shows_error(page):
    before = wait_for_images(page, 1 + len(DEFAULTS))
    with page.expect_file_chooser() as chooser:
        page.locator(".widget-upload").click()
    chooser.value.set_files([{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a photo"}])
    page.wait_for_selector("text=Could not use that input", timeout=60_000)
    assert page.locator("text=not a readable image").count() >= 1
    assert page.locator("text=Traceback").count() == 0
    assert overlay_sources(page) == before  # the previous state is kept
