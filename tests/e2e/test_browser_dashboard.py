"""The dashboard in a real headless Chromium (Debian's, driven by Playwright): sign in, see the tunnel
live, open its inspector and watch requests appear without a reload, create and revoke a token, share
with a user and create a link. With RELAY_SCREENSHOTS=DIR set, it saves the screenshots docs/ shows:
``RELAY_SCREENSHOTS=docs/screenshots pytest tests/e2e/test_browser_dashboard.py tests/e2e/test_offline.py``"""

from __future__ import annotations

import os
from pathlib import Path

from playwright.async_api import Page, async_playwright, expect

from .conftest import Owned, unique_name
from .harness import CHROMIUM, CHROMIUM_FLAGS, RelayProcess, fetch


async def shot(page: Page, workdir: Path, name: str) -> None:
    await page.screenshot(path=str(workdir / name), full_page=True)
    where = os.environ.get("RELAY_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(where) / name), full_page=True)


async def test_the_dashboard_in_a_browser(relay: RelayProcess, owned: Owned, workdir: Path) -> None:
    assert CHROMIUM is not None, "install Debian's chromium (.ci/run does)"
    bob = unique_name("bob")
    relay.add_user(bob)
    origin = f"http://localhost:{relay.http_port}"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = await browser.new_page(viewport={"width": 1100, "height": 800})
        errors: list[str] = []
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        try:
            await page.goto(f"{origin}/_relay/login")
            await page.fill("input[name=token]", owned.token)
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{origin}/")
            row = page.locator("tr", has_text=owned.url)
            await expect(row).to_contain_text("live")
            await shot(page, workdir, "dashboard.png")

            # The inspector: requests appear as they are answered, no reload.
            await row.get_by_role("link", name="inspect").click()
            await page.wait_for_url(f"{origin}/_relay/dashboard/tunnel?host=*")
            await expect(page.locator("#no-requests")).to_be_visible()
            for n in range(3):
                reply = await fetch(
                    relay, owned.host, f"/echo?from=test{n}", headers={"X-Relay-Token": owned.token}
                )
                assert reply.status == 200
            inspector = page.locator("#inspector tbody")
            await expect(inspector).to_contain_text("/echo?from=test2", timeout=10_000)
            await expect(inspector.locator("tr")).to_have_count(3)

            # Share with a user, and a link shown once with a copy button.
            await page.fill("input[name=with]", bob)
            await page.get_by_role("button", name="Share with a user").click()
            await expect(page.locator(".flash")).to_contain_text(f"shared with {bob}")
            await page.fill("input[name=label]", "ta")
            await page.get_by_role("button", name="Create a share link").click()
            await expect(page.locator("#secret")).to_contain_text(f"{origin}/_relay/share/")
            await expect(page.get_by_role("button", name="Copy")).to_be_visible()
            await page.get_by_role("link", name="Done").click()
            await expect(page.locator("body")).to_contain_text("link:ta")
            await shot(page, workdir, "tunnel.png")

            # A token: created (shown once), then revoked.
            await page.goto(f"{origin}/")
            await page.fill("input[name=label]", "from-the-browser")
            await page.get_by_role("button", name="Create a token").click()
            token = (await page.locator("#secret").inner_text()).strip()
            assert token.startswith("rly_")
            assert (await fetch(relay, owned.host, "/echo", headers={"X-Relay-Token": token})).status == 200
            await page.get_by_role("link", name="Done").click()
            token_row = page.locator("tr", has_text="from-the-browser")
            await token_row.get_by_role("button", name="Revoke").click()
            await expect(page.locator(".flash")).to_contain_text("revoked")
            assert (await fetch(relay, owned.host, "/echo", headers={"X-Relay-Token": token})).status == 401
            assert not errors, errors  # the page's CSP let its own script and style through, nothing else
        finally:
            await browser.close()
