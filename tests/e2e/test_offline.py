"""The offline page (issue 13), against a real relay, real OpenSSH clients and a real Chromium: a
visitor allowed on a host whose client went away gets 502 saying when it was last seen, and the page
reloads itself into the app once the client is back; JSON clients get last_seen; it survives a relay
restart; a visitor who may not visit learns nothing new."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from pathlib import Path

from playwright.async_api import async_playwright, expect

from .conftest import Owned, unique_name
from .harness import CHROMIUM, CHROMIUM_FLAGS, Backend, RelayProcess, fetch, open_tunnel, start_relay
from .test_browser_dashboard import shot


async def wait_offline(relay: RelayProcess, host: str, token: str) -> None:
    for _ in range(50):
        if (await fetch(relay, host, "/echo", headers={"X-Relay-Token": token})).status == 502:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{host} never went offline")


async def test_the_offline_page_brings_the_app_back_by_itself(
    relay: RelayProcess, owned: Owned, backend: Backend, workdir: Path
) -> None:
    assert CHROMIUM is not None, "install Debian's chromium (.ci/run does)"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = await browser.new_page()
        back = None
        try:
            await page.goto(f"{owned.url}/echo?relay_token={owned.token}")  # signed in on the host
            await expect(page.locator("body")).to_contain_text('"path": "/echo"')
            await owned.tunnel.close()
            await wait_offline(relay, owned.host, owned.token)
            reply = await page.reload()
            assert reply is not None and reply.status == 502
            await expect(page.locator("h1")).to_contain_text(f"{owned.name} is offline")
            await expect(page.locator("body")).to_contain_text("Last seen")
            await expect(page.locator("body")).to_contain_text("just now")
            await shot(page, workdir, "offline.png")
            # The client comes back: the waiting page reloads into the app, nobody touching it.
            back = await open_tunnel(
                relay, owned.name, f"{owned.name}:80:127.0.0.1:{backend.port}", token=owned.token
            )
            await expect(page.locator("body")).to_contain_text('"path": "/echo"', timeout=15_000)
        finally:
            await browser.close()
            if back is not None:
                await back.close()


async def test_offline_json_says_when_and_only_to_those_allowed(relay: RelayProcess, owned: Owned) -> None:
    before = time.time()
    await owned.tunnel.close()
    await wait_offline(relay, owned.host, owned.token)
    reply = await fetch(relay, owned.host, "/api", headers={"X-Relay-Token": owned.token})
    doc = reply.json()
    assert reply.status == 502 and doc["status"] == 502 and "offline" in doc["error"]
    seen = datetime.fromisoformat(doc["last_seen"].replace("Z", "+00:00"))
    assert before - 2 <= seen.timestamp() <= time.time() + 1
    status = await fetch(relay, owned.host, "/_relay/status", headers={"X-Relay-Token": owned.token})
    assert status.status == 200 and status.json()["live"] is False
    # Someone else gets what they get for a live tunnel: nothing about it.
    other = unique_name("oth")
    other_token = relay.add_user(other)
    assert (await fetch(relay, owned.host, "/api", headers={"X-Relay-Token": other_token})).status == 403
    assert (await fetch(relay, owned.host, "/api")).status == 401
    anonymous = await fetch(relay, owned.host, "/lab", headers={"Accept": "text/html"})
    assert anonymous.status == 302 and b"offline" not in anonymous.body
    assert (await fetch(relay, owned.host, "/_relay/status")).status == 401
    assert (await fetch(relay, "nobody-here.localhost", "/api")).status == 404


async def test_last_seen_survives_a_restart(workdir: Path, backend: Backend) -> None:
    first = start_relay(workdir)
    name = unique_name("rst")
    try:
        token = first.add_user(name)
        tunnel = await open_tunnel(first, name, f"{name}:80:127.0.0.1:{backend.port}", token=token)
        await tunnel.close()
        await wait_offline(first, f"{name}.localhost", token)
        await asyncio.sleep(0.3)  # the close is written behind
        seen = (await fetch(first, f"{name}.localhost", "/", headers={"X-Relay-Token": token})).json()
    finally:
        first.stop()
    second = start_relay(workdir, data_dir=first.data_dir)
    try:
        again = await fetch(second, f"{name}.localhost", "/", headers={"X-Relay-Token": token})
        assert again.status == 502 and again.json()["last_seen"] == seen["last_seen"] is not None
        assert datetime.fromisoformat(seen["last_seen"].replace("Z", "+00:00")).tzinfo == timezone.utc
    finally:
        second.stop()
