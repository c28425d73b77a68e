"""relay-client's start-up: aiohttp (a quarter of a second of imports) is loaded only for what needs
it — ``--lab`` and SSH over WebSocket — never for a plain ``connect``, whose time to URL it would add to."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def loaded_after(statement: str) -> set[str]:
    probe = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    return set(out.stdout.split())


def test_the_cli_and_a_plain_connect_do_not_import_aiohttp() -> None:
    loaded = loaded_after("import client.cli, client.connect, client.settings")
    assert "client.connect" in loaded and "aiohttp" not in loaded


def test_the_websocket_transport_does() -> None:
    assert "aiohttp" in loaded_after("import client.wss")
