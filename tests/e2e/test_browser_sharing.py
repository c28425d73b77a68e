"""Sharing as people meet it, in a real headless Chromium (Debian's, driven by Playwright) against a
real relay and real OpenSSH clients: alice shares her tunnel with bob over SSH; bob, signed in once on
the relay host, opens it with one click from his home page and runs a request through it; carol
cannot. A guest opens a share link in a fresh browser context, uses the app (a WebSocket included),
cannot open alice's other tunnel, and is refused after revoke and after expiry. ``public on`` lets
curl in without a credential, ``off`` refuses it again, and the audit log names each visitor."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from .conftest import Owned, unique_name
from .harness import CHROMIUM, CHROMIUM_FLAGS, Backend, RelayProcess, open_tunnel, ssh_exec

#: Opens a WebSocket to the page's own host, sends one message and resolves with the echo, then
#: with how the socket ended once it closes (or "open" after ``wait`` ms).
_WEBSOCKET = """
async (wait) => {
  const ws = new WebSocket(`ws://${location.host}/ws`);
  await new Promise((ok, bad) => { ws.onopen = ok; ws.onerror = () => bad(new Error("ws error")); });
  const echo = new Promise((ok) => { ws.onmessage = (m) => ok(m.data); });
  ws.send("hi");
  window.relayClosed = new Promise((ok) => { ws.onclose = (e) => ok(`closed ${e.code}`); });
  return await echo;
}
"""
_CLOSED = (
    "async (wait) => await Promise.race("
    "[window.relayClosed, new Promise((ok) => setTimeout(() => ok('open'), wait))])"
)


async def sign_in_on_relay(context: BrowserContext, relay: RelayProcess, token: str) -> Page:
    page = await context.new_page()
    await page.goto(f"http://localhost:{relay.http_port}/_relay/login")
    await page.fill("input[name=token]", token)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"http://localhost:{relay.http_port}/")
    return page


async def curl_status(relay: RelayProcess, host: str) -> str:
    """The status curl gets (run without blocking: the backend answers from this event loop)."""
    proc = await asyncio.create_subprocess_exec(
        "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20",
        "-H", f"Host: {host}", f"{relay.base}/echo",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return out.decode()


async def as_owner(relay: RelayProcess, owner: Owned, *argv: str) -> str:
    code, out, err = await ssh_exec(relay, owner.name, list(argv), token=owner.token)
    assert code == 0, err
    return out


async def test_sharing_in_a_browser(
    relay: RelayProcess, owned: Owned, backend: Backend, workdir: Path
) -> None:
    assert CHROMIUM is not None, "install Debian's chromium (.ci/run does)"
    alice, bob, carol = owned, unique_name("bob"), unique_name("carol")
    bob_token, carol_token = relay.add_user(bob), relay.add_user(carol)
    await as_owner(relay, alice, "share", "add", alice.name, "--with", bob)
    other = unique_name("oth")
    second = await open_tunnel(relay, alice.name, f"{other}:80:127.0.0.1:{backend.port}", token=alice.token)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            await _bob_and_carol(browser, relay, alice, bob_token, carol_token)
            await _guests(browser, relay, alice, relay.url(other), workdir)
        finally:
            await browser.close()
            await second.close()

    # Public on: curl gets in with no credential; off: refused again.
    assert await curl_status(relay, alice.host) == "401"
    await as_owner(relay, alice, "share", "public", alice.name, "on")
    assert await curl_status(relay, alice.host) == "200"
    await as_owner(relay, alice, "share", "public", alice.name, "off")
    assert await curl_status(relay, alice.host) == "401"

    # The audit log names each visitor of alice's host.
    wanted = {("visit", bob), ("visit", "link:ta"), ("visit", "link:brief"), ("visit", "public")}
    events: list[dict[str, Any]] = []
    for _ in range(30):
        events = json.loads(await as_owner(relay, alice, "audit", "--host", alice.name, "--json"))
        if wanted <= {(e["event"], e["actor"]) for e in events}:
            break
        await asyncio.sleep(0.3)
    assert wanted <= {(e["event"], e["actor"]) for e in events}
    assert not any(e["actor"] == carol for e in events if e["event"] == "visit")


async def _bob_and_carol(
    browser: Browser, relay: RelayProcess, alice: Owned, bob_token: str, carol_token: str
) -> None:
    bob = await browser.new_context()
    home = await sign_in_on_relay(bob, relay, bob_token)
    await expect(home.locator("body")).to_contain_text(f"shared by {alice.name}")
    await home.click(f"a[href='{alice.url}']")  # one click from his home page
    await home.wait_for_url(f"{alice.url}/")
    status = await home.evaluate("async () => (await fetch('/echo?from=bob')).status")
    assert status == 200
    await bob.close()

    carol = await browser.new_context()
    page = await sign_in_on_relay(carol, relay, carol_token)
    reply = await page.goto(alice.url + "/echo")
    assert reply is not None and reply.status == 403
    await expect(page.locator("body")).to_contain_text("may not open")
    await carol.close()


async def _guests(browser: Browser, relay: RelayProcess, alice: Owned, other_url: str, workdir: Path) -> None:
    link = json.loads(await as_owner(relay, alice, "share", "link", alice.name, "--label", "ta", "--json"))
    guest = await browser.new_context()
    page = await guest.new_page()
    try:
        await page.goto(link["url"])
        await page.wait_for_url(f"{alice.url}/")
        await expect(page.locator("body")).to_contain_text('"path": "/"')
        assert await page.evaluate(_WEBSOCKET, 0) == "echo:hi"
        # Alice's other tunnel is not the link's: the guest is sent to sign in, not let in.
        other = await guest.new_page()
        await other.goto(other_url + "/echo")
        assert other.url.startswith(f"http://localhost:{relay.http_port}/_relay/login")
        await other.close()
        # Revoked: the open WebSocket closes within 10 s, and the next request gets the 410 page.
        await as_owner(relay, alice, "share", "revoke", link["id"])
        assert (await page.evaluate(_CLOSED, 10_000)).startswith("closed")
        reply = await page.goto(alice.url + "/echo")
        assert reply is not None and reply.status == 410
        await expect(page.locator("h1")).to_contain_text("no longer valid")
    finally:
        await page.screenshot(path=str(workdir / "guest.png"))
        await guest.close()

    brief = json.loads(
        await as_owner(
            relay, alice, "share", "link", alice.name, "--label", "brief", "--expires", "3s", "--json"
        )
    )
    guest = await browser.new_context()
    page = await guest.new_page()
    await page.goto(brief["url"])
    await page.wait_for_url(f"{alice.url}/")
    await asyncio.sleep(3.2)
    reply = await page.goto(alice.url + "/echo")
    assert reply is not None and reply.status == 410
    fresh = await browser.new_context()
    late = await fresh.new_page()
    reply = await late.goto(brief["url"])
    assert reply is not None and reply.status == 410
    await guest.close()
    await fresh.close()
