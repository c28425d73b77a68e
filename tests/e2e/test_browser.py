"""A person's path, in a real headless Chromium (Debian's, driven by Playwright): open the URL that
``relay-client connect --lab`` printed, get sent to the relay login, enter the token, land in
JupyterLab, run a cell, see its output."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import async_playwright, expect

from .conftest import unique_name
from .harness import CHROMIUM, CHROMIUM_FLAGS, RelayProcess, start_client


async def test_browser_login_then_lab_runs_a_cell(relay: RelayProcess, workdir: Path) -> None:
    assert CHROMIUM is not None, "install Debian's chromium (.ci/run does)"
    name = unique_name("web")
    token = relay.add_user(name)
    notebooks = workdir / "nb"
    notebooks.mkdir()
    client = await start_client(
        relay,
        workdir,
        [
            "--user",
            name,
            "--token",
            token,
            "--lab",
            "--notebook-dir",
            str(notebooks),
            "--lab-log",
            str(workdir / "lab.log"),
        ],
    )
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = await browser.new_page()
            console: list[str] = []
            page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
            try:
                await page.goto(client.url)
                # Sent to the login origin, not the tunnel host.
                assert page.url.startswith(f"http://localhost:{relay.http_port}/_relay/login?next=")
                await page.fill("input[name=token]", token)
                await page.click("button[type=submit]")
                await page.wait_for_url(f"http://{name}.localhost:{relay.http_port}/lab**", timeout=60_000)
                launcher = page.locator(".jp-LauncherCard[data-category='Notebook']").first
                await launcher.click(timeout=60_000)
                editor = page.locator(".jp-Notebook .jp-Cell .cm-content").first
                await editor.click(timeout=60_000)
                await page.keyboard.type("print(6 * 7, 'from the relay')")
                await expect(editor).to_contain_text("from the relay")
                output = page.locator(".jp-OutputArea-output").first
                # Lab drops a run request made before its kernel session is attached (the prompt stays
                # "[ ]"), as a person would see; like a person, run the cell again until it runs.
                for _ in range(12):
                    await editor.click()
                    await page.keyboard.press("Control+Enter")
                    try:
                        await expect(output).to_contain_text("42 from the relay", timeout=5_000)
                        break
                    except AssertionError:
                        continue
                await expect(output).to_contain_text("42 from the relay", timeout=30_000)
            finally:
                (workdir / "console.log").write_text("\n".join(console))
                await page.screenshot(path=str(workdir / "lab.png"))
                await browser.close()
    finally:
        assert await client.stop() == 0
