"""How many students can one machine serve the dashboard to? A bounded load test, not a CI test.

Starts Voila on 127.0.0.1 (one CPU thread per kernel, as `python3 dev.py voila` does), then
for N = 1, 5, 10 opens N headless Chromium pages at once (Debian's `chromium`, driven by
Playwright). Each page is one student: it opens the dashboard, waits for the first overlays,
then switches the target class and waits for the new overlays. Reports the time to the first
overlay, the time per interaction, and the memory of each kernel.

    python scripts/classroom_load_test.py [--clients 1 5 10] [--out docs/classroom-load.json]

Every wait is bounded (--timeout, default 600 s per round); only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "05_comparison_dashboard.ipynb"
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kernel_memory_mb() -> list[float]:
    """Resident memory of every running ipykernel process, in MB (Linux /proc)."""
    sizes = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            if b"ipykernel_launcher" not in cmdline:
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes.append(int(line.split()[1]) / 1024)
        except OSError:
            continue
    return sizes


async def student(browser, url: str, expected: int, timeout: float) -> dict:
    context = await browser.new_context(viewport={"width": 1400, "height": 1100})
    page = await context.new_page()
    start = time.perf_counter()
    await page.goto(url, timeout=timeout * 1000)

    async def images():
        return [s for s in await page.eval_on_selector_all(".widget-image", "els => els.map(e => e.src)") if s]

    async def wait_until(predicate):
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            srcs = await images()
            if predicate(srcs):
                return srcs
            await page.wait_for_timeout(200)
        raise TimeoutError("the dashboard did not render in time")

    first = await wait_until(lambda srcs: len(srcs) == expected)
    first_overlay = time.perf_counter() - start
    click = time.perf_counter()
    await page.locator(".widget-toggle-button").nth(1).click()
    await wait_until(lambda srcs: len(srcs) == expected and all(a != b for a, b in zip(srcs[1:], first[1:])))
    interaction = time.perf_counter() - click
    return {"context": context, "first_overlay_s": first_overlay, "interaction_s": interaction}


async def round_of(n: int, url: str, expected: int, chromium: str, timeout: float) -> dict:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=chromium, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"],
        )
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(student(browser, url, expected, timeout) for _ in range(n))), timeout * 2
            )
            memory = kernel_memory_mb()
            for r in results:
                await r.pop("context").close()
        finally:
            await browser.close()
    firsts = [r["first_overlay_s"] for r in results]
    clicks = [r["interaction_s"] for r in results]
    return {
        "clients": n,
        "first_overlay_s": {"median": statistics.median(firsts), "max": max(firsts)},
        "interaction_s": {"median": statistics.median(clicks), "max": max(clicks)},
        "kernels": len(memory),
        "kernel_memory_mb": {"median": statistics.median(memory), "max": max(memory)} if memory else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per page and step")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    if max(args.clients) > 30:
        parser.error("at most 30 clients: this is a bounded test")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("Debian's chromium is needed: apt-get install chromium", file=sys.stderr)
        return 2

    import xai_helpers as xh

    expected = 1 + sum(m.default for m in xh.METHODS.values())  # the photo and the default overlays
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    log = open(ROOT / ".voila-load-test.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "voila", str(NOTEBOOK), f"--port={port}", "--no-browser", "--Voila.ip=127.0.0.1"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    rounds = []
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except urllib.error.HTTPError:
                break  # the server answers
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    print("voila did not start; see .voila-load-test.log", file=sys.stderr)
                    return 1
                time.sleep(0.5)
        for n in args.clients:
            result = asyncio.run(round_of(n, url, expected, chromium, args.timeout))
            rounds.append(result)
            print(json.dumps(result), flush=True)
            time.sleep(5)  # let the closed pages' kernels shut down before the next round
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    report = {
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)},
        "threads_per_kernel": 1,
        "rounds": rounds,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
