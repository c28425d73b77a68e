"""The wheel the relay serves of its client (DESIGN §3.7): the client's share of the relay's
requirements, the same bytes for the same files, and a RECORD pip accepts."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from relay import __version__, client_wheel

DECLARED = [
    "asyncssh>=2.21.1,<2.25",
    "aiohttp>=3.13.3",
    "typer>=0.15",
    "cryptography>=44.0.1",
    "dnspython>=2.7",
    'uvloop>=0.21; sys_platform == "linux"',
    'jupyterlab>=4.4.8; extra == "lab"',
    'jupyterlab>=4.4.8; extra == "test"',
    'pytest>=8.3; extra == "test"',
    'typer>=0.15; extra == "test"',
]


def test_requirements_are_the_clients_share_of_the_relays() -> None:
    assert client_wheel.requirements(DECLARED) == [
        "asyncssh>=2.21.1,<2.25",
        "aiohttp>=3.13.3",
        "typer>=0.15",
        'jupyterlab>=4.4.8; extra == "lab"',
    ]


def test_the_same_files_give_the_same_bytes(tmp_path: Path) -> None:
    src = tmp_path / "client"
    (src / "sub").mkdir(parents=True)
    (src / "__init__.py").write_text('__version__ = "9.9"\n')
    (src / "sub" / "x.py").write_text("X = 1\n")
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "junk.py").write_text("no")
    one = client_wheel.build(src, "9.9", ["typer"])
    (src / "__init__.py").touch()  # a new mtime changes nothing
    two = client_wheel.build(src, "9.9", ["typer"])
    assert one == two and one.filename == "relay_client-9.9-py3-none-any.whl"
    assert one.sha256 == hashlib.sha256(one.data).hexdigest()
    archive = zipfile.ZipFile(io.BytesIO(one.data))
    names = archive.namelist()
    assert "client/sub/x.py" in names and not any("__pycache__" in n for n in names)
    record = archive.read("relay_client-9.9.dist-info/RECORD").decode().splitlines()
    for line in record:
        path, digest, size = line.split(",")
        if path.endswith("RECORD"):
            assert digest == size == ""
            continue
        data = archive.read(path)
        want = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert digest == f"sha256={want}" and int(size) == len(data)
    assert len(record) == len(names)
    (src / "sub" / "x.py").write_text("X = 2\n")
    assert client_wheel.build(src, "9.9", ["typer"]).sha256 != one.sha256


def test_the_served_wheel_carries_the_shared_ssh_tuning() -> None:
    wheel = client_wheel.locate()
    names = zipfile.ZipFile(io.BytesIO(wheel.data)).namelist()
    assert "client/connect.py" in names and "ssh_tuning/__init__.py" in names
    assert not any(name.startswith("relay/") for name in names)


def test_the_running_version_is_served_and_a_mismatch_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert client_wheel.locate().version == __version__
    (tmp_path / "__init__.py").write_text('__version__ = "0.0.0-other"\n')
    monkeypatch.setattr(client_wheel, "client_dir", lambda: tmp_path)
    with pytest.raises(client_wheel.WheelUnavailable, match=r"version 0\.0\.0-other"):
        client_wheel.locate()
    (tmp_path / "__init__.py").write_text("nothing here\n")
    with pytest.raises(client_wheel.WheelUnavailable, match="no __version__"):
        client_wheel.locate()
