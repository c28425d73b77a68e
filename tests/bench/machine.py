"""The machine and the versions a run measured, for the report's header."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from tests.e2e.harness import CHROMIUM

from .classic import SSH
from .nginx import NGINX
from .wrk import WRK


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    text = (out.stdout + out.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def _cpu_model() -> str:
    info = Path("/proc/cpuinfo")
    for line in info.read_text().splitlines() if info.exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe() -> list[tuple[str, str]]:
    wrk = _first_line([WRK, "-v"])
    return [
        ("cores", f"{os.cpu_count()} ({_cpu_model()})"),
        ("kernel", f"{platform.system()} {platform.release()}"),
        ("Python", sys.version.split()[0]),
        ("relay", _package("relay-tunnels")),
        ("asyncssh / aiohttp / uvloop", " / ".join(_package(p) for p in ("asyncssh", "aiohttp", "uvloop"))),
        ("OpenSSH (sshd and ssh)", _first_line([SSH, "-V"])),
        ("nginx", _first_line([NGINX, "-v"]).removeprefix("nginx version: ")),
        ("wrk", re.sub(r"\s+Copyright.*", "", wrk)),
        ("Chromium", _first_line([CHROMIUM, "--version"]) if CHROMIUM else "not installed"),
        ("JupyterLab / Playwright", f"{_package('jupyterlab')} / {_package('playwright')}"),
    ]
