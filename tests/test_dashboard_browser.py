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


# Generous: with both cores busy (a class, or another job beside CI) a kernel starts many times slower.
# Every wait polls for a condition; none assumes how fast the machine is.
TIMEOUT = float(os.environ.get("XAI_BROWSER_TIMEOUT", "600"))


@pytest.fixture(scope="module")
def browser():
    with playwright_sync.sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, voila_url):
    """A fresh page, and with it a fresh kernel and dashboard: no test sees what another one clicked."""
    pg = browser.new_page(viewport={"width": 1400, "height": 1100})
    try:
        pg.goto(voila_url, timeout=TIMEOUT * 1000)
        pg.wait_for_selector("text=Compare explanation methods", timeout=TIMEOUT * 1000)
        wait_for_images(pg, 1 + len(DEFAULTS))
        yield pg
    finally:
        pg.close()


def overlay_sources(pg) -> list[str]:
    return pg.eval_on_selector_all(".widget-image", "els => els.map(e => e.src)")


def wait_until(pg, condition, what: str):
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        pg.wait_for_timeout(250)
    raise AssertionError(f"gave up after {TIMEOUT:.0f} s waiting for {what}")


def wait_for_images(pg, count: int) -> list[str]:
    def rendered():
        srcs = overlay_sources(pg)
        return srcs if len(srcs) == count and all(srcs) else None

    return wait_until(pg, rendered, f"{count} rendered images (saw {len(overlay_sources(pg))})")


def wait_for_change(pg, before: list[str]) -> list[str]:
    def changed():
        now = overlay_sources(pg)
        return now if len(now) == len(before) and all(a != b for a, b in zip(now[1:], before[1:])) else None

    return wait_until(pg, changed, "the overlays to change")


def wait_for_text_count(pg, text: str, count: int) -> int:
    return wait_until(pg, lambda: (n := pg.locator(f"text={text}").count()) >= count and n, f"{count} x {text!r}")


DEFAULTS = [name for name, m in xh.METHODS.items() if m.default]
SLOW = [name for name, m in xh.METHODS.items() if m.reports_progress]
BASELINES = [name for name, m in xh.METHODS.items() if m.baseline]
SIGNED = [name for name in DEFAULTS if xh.METHODS[name].signed]


def test_overlays_render(page):
    srcs = overlay_sources(page)
    assert len(srcs) == 1 + len(DEFAULTS)  # the original and the default methods' overlays
    assert all(s.startswith(("blob:", "data:")) for s in srcs)
    for method in xh.METHODS:  # every registered method can be ticked; the null baselines once shown
        boxes = page.get_by_role("checkbox", name=method, exact=False)
        assert (boxes.count() == 0) if xh.METHODS[method].baseline else (boxes.count() >= 1), method
    assert page.locator("text=Egyptian cat").count() >= 1
    assert page.locator("text=same map by construction").count() >= 1  # why the first view skips the CAM family
    button = page.get_by_role("button", name="Measure deletion AUC")
    assert button.evaluate("b => b.scrollWidth <= b.clientWidth")  # the label is not cut off


def test_baselines_shown_and_measured(page):
    page.get_by_role("checkbox", name="show baselines").check()
    shown = 1 + len(DEFAULTS) + len(BASELINES)
    wait_for_images(page, shown)
    for name in BASELINES:
        assert page.get_by_role("checkbox", name=name, exact=False).count() == 1
    page.get_by_role("button", name="Measure deletion AUC").click()
    # One label under every map but the original: wait for all of them, not the first.
    assert wait_for_text_count(page, "deletion AUC 0.", shown - 1) == shown - 1
    page.get_by_role("checkbox", name="show baselines").uncheck()
    wait_for_images(page, 1 + len(DEFAULTS))


def test_slow_method_one_click_away_and_unticked(page):
    page.get_by_role("checkbox", name=SLOW[0], exact=False).check()
    wait_for_images(page, 2 + len(DEFAULTS))
    if os.environ.get("XAI_SCREENSHOT"):
        page.locator(".widget-vbox", has_text="Compare explanation methods").first.screenshot(
            path=os.environ["XAI_SCREENSHOT"]
        )
    page.get_by_role("checkbox", name=SLOW[0], exact=False).uncheck()
    wait_for_images(page, 1 + len(DEFAULTS))


def test_switching_target_changes_overlays(page):
    before = overlay_sources(page)
    page.locator(".widget-toggle-button").nth(1).click()  # the second most likely class
    after = wait_for_change(page, before)
    assert after[0] == before[0]  # the photo itself is unchanged


def test_signed_maps_toggle(page):
    before = overlay_sources(page)
    page.get_by_role("checkbox", name="signed maps").check()
    index = {name: i + 1 for i, name in enumerate(DEFAULTS)}

    def redrawn():
        now = overlay_sources(page)
        return now if all(now[index[n]] != before[index[n]] for n in SIGNED) else None

    after = wait_until(page, redrawn, "the signed methods to be redrawn")
    unsigned = [n for n in DEFAULTS if n not in SIGNED]
    assert all(after[index[n]] == before[index[n]] for n in unsigned)


def test_non_image_upload_shows_error(page):
    before = overlay_sources(page)
    with page.expect_file_chooser() as chooser:
        page.locator(".widget-upload").click()
    chooser.value.set_files([{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a photo"}])
    page.wait_for_selector("text=Could not use that input", timeout=TIMEOUT * 1000)
    assert page.locator("text=not a readable image").count() >= 1
    assert page.locator("text=Traceback").count() == 0
    assert overlay_sources(page) == before  # the previous state is kept
