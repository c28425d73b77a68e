"""A JupyterLab cold page load in Debian's Chromium (driven by Playwright): a fresh browser context
(empty cache, no cookies) opens Lab's URL, and the clock stops when the Lab shell shows its launcher
and every request the page made so far has finished. The relay is entered with ``?relay_token=``,
as a person's bookmark would (one local 303, which sets the session cookie)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import quote

from playwright.async_api import Browser, Request, async_playwright

from tests.e2e.harness import CHROMIUM, CHROMIUM_FLAGS

from .http_client import Endpoint

#: Rendered once Lab's plugins are up and it has listed its kernels: the page is usable.
READY_SELECTOR = ".jp-LauncherCard"
#: Seconds without any request in flight after which the page counts as loaded.
QUIET = 1.0
#: Seconds a load may take before it counts as failed.
LOAD_TIMEOUT = 120.0


@dataclass
class LabLoad:
    seconds: float
    requests: int


def lab_url(endpoint: Endpoint, lab_path: str) -> str:
    token = endpoint.headers.get("X-Relay-Token")
    query = f"&relay_token={quote(token)}" if token else ""
    return f"http://{endpoint.host}{lab_path}{query}"


async def load(browser: Browser, url: str) -> LabLoad:
    context = await browser.new_context()
    try:
        page = await context.new_page()
        pending: set[Request] = set()
        done = 0
        last_done = 0.0

        def started(request: Request) -> None:
            pending.add(request)

        def finished(request: Request) -> None:
            nonlocal done, last_done
            pending.discard(request)
            done += 1
            last_done = time.perf_counter()

        page.on("request", started)
        page.on("requestfinished", finished)
        page.on("requestfailed", finished)
        t0 = time.perf_counter()
        await page.goto(url, timeout=LOAD_TIMEOUT * 1e3)
        await page.wait_for_selector(READY_SELECTOR, timeout=LOAD_TIMEOUT * 1e3)
        ready = time.perf_counter()
        # Lab keeps fetching for a moment after the launcher shows (settings, translations, icons):
        # wait for a quiet spell with nothing in flight; the load ended at the last request that did.
        while pending or time.perf_counter() - last_done < QUIET:
            if time.perf_counter() - t0 > LOAD_TIMEOUT:
                raise TimeoutError(f"requests still pending: {[r.url for r in pending][:5]}")
            await asyncio.sleep(0.05)
        return LabLoad(max(ready, last_done) - t0, done)
    finally:
        await context.close()


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    if CHROMIUM is None:
        raise RuntimeError("install Debian's chromium (.ci/run does)")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            await browser.close()
