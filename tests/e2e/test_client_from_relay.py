"""The client from the relay itself (issue 14, DESIGN §3.7): `/_relay/client` is a public page with the
pinned install line; `/_relay/dist/<wheel>` serves a wheel of exactly the running version, which pip
installs into a fresh venv (checking the SHA-256 the page gives), and that client connects with a
connect string alone, pinning the fingerprint it carries."""

from __future__ import annotations

import asyncio
import hashlib
import html
import io
import json
import re
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import aiohttp
from multidict import CIMultiDict

from relay import __version__, client_wheel

from .conftest import unique_name
from .harness import Backend, RelayProcess, client_env
from .test_connect_string import admin, serves_pinned


async def get(relay: RelayProcess, path: str, method: str = "GET") -> tuple[int, CIMultiDict[str], bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"http://localhost:{relay.http_port}{path}") as reply:
            return reply.status, CIMultiDict(reply.headers), await reply.read()


def fresh_venv(where: Path) -> Path:
    """A new venv whose only view of this one is its dependencies (a .pth after its own
    site-packages), so pip needs no index and the client must come from the wheel."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=120)
    python = where / "bin" / "python"
    own = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    (Path(own) / "test-deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


async def test_the_page_names_the_wheel_and_its_hash(relay: RelayProcess) -> None:
    status, headers, body = await get(relay, "/_relay/client")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    page = html.unescape(body.decode())
    m = re.search(
        r"(http://localhost:\d+/_relay/dist/(relay_client-[^\"#]+\.whl))#sha256=([0-9a-f]{64})", page
    )
    assert m is not None, page
    url, filename, digest = m.groups()
    assert url.startswith(f"http://localhost:{relay.http_port}/")
    assert filename == f"relay_client-{__version__}-py3-none-any.whl"
    assert "RELAY_URL" in page and "connect(lab=True)" in page
    status, headers, wheel = await get(relay, f"/_relay/dist/{filename}")
    assert status == 200 and hashlib.sha256(wheel).hexdigest() == digest
    assert headers["ETag"] == f'"{digest}"'
    assert (await get(relay, f"/_relay/dist/{filename}", "HEAD"))[:1] == (200,)
    names = zipfile.ZipFile(io.BytesIO(wheel)).namelist()
    assert "client/cli.py" in names and not any(n.startswith("relay/") for n in names)
    # Any other file, and any change, is refused; nothing there needs or sets a credential.
    assert (await get(relay, "/_relay/dist/relay_client-0.0.1-py3-none-any.whl"))[0] == 404
    assert (await get(relay, "/_relay/dist/../store.db"))[0] in (400, 404)
    assert (await get(relay, "/_relay/client", "POST"))[0] in (403, 405)
    assert "Set-Cookie" not in headers
    # Where to find it is printed beside every new user's connect string, and at the first start.
    added = admin(relay, "user", "add", unique_name("page"))
    assert f"the client to install: http://localhost:{relay.http_port}/_relay/client" in added.stdout
    assert any(line.endswith(f"localhost:{relay.http_port}/_relay/client") for line in relay.output)


async def test_the_served_wheel_installs_and_connects_with_one_secret(
    relay: RelayProcess, backend: Backend, workdir: Path
) -> None:
    _, _, body = await get(relay, "/_relay/client")
    m = re.search(
        r"http://localhost:\d+/_relay/dist/\S+?\.whl#sha256=[0-9a-f]{64}", html.unescape(body.decode())
    )
    assert m is not None
    python = fresh_venv(workdir / "venv")
    install = await asyncio.create_subprocess_exec(
        str(python), "-m", "pip", "install", "--no-index", "--disable-pip-version-check", "-q",
        f"relay-client @ {m[0]}",
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=workdir,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(install.communicate(), 240)
    assert install.returncode == 0, out.decode()
    where = subprocess.run(
        [str(python), "-c", "import client; print(client.__file__, client.__version__)"],
        capture_output=True, text=True, check=True, cwd=workdir,
    ).stdout.split()  # fmt: skip
    assert where[0].startswith(str(workdir / "venv")) and where[1] == __version__

    name = unique_name("dist")
    doc = json.loads(admin(relay, "user", "add", name, "--json").stdout)
    home = workdir / "home"
    home.mkdir(mode=0o700)
    proc = await asyncio.create_subprocess_exec(
        str(workdir / "venv" / "bin" / "relay-client"), "connect", "--port", str(backend.port),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=workdir,
        env={**client_env(home), "RELAY_URL": doc["connect"]}, start_new_session=True,
    )  # fmt: skip
    await serves_pinned(relay, proc, home, name, doc["token"])


def test_an_installed_relay_serves_the_same_client(workdir: Path) -> None:
    """Not only a checkout: a relay installed as pip and the Docker image install it (its packages
    copied into site-packages, no source tree anywhere near) builds the client's wheel from its
    installed files, byte for byte the one a checkout builds."""
    root = Path(__file__).resolve().parents[2]
    python = fresh_venv(workdir / "venv")
    purelib = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    for package in ("relay", "client", "ssh_tuning"):
        shutil.copytree(root / package, purelib / package, ignore=shutil.ignore_patterns("__pycache__"))
    probe = (
        "import relay, relay.client_wheel as c; w = c.locate(); "
        "print(relay.__file__, c.client_dir(), w.filename, w.sha256)"
    )
    out = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, check=True, cwd=workdir
    ).stdout.split()
    assert all(p.startswith(str(purelib)) for p in out[:2]), out
    here = client_wheel.locate()
    assert out[2:] == [here.filename, here.sha256]
