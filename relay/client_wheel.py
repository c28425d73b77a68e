"""The client, served by the relay itself (DESIGN §3.7): a wheel of ``relay-client`` built from the
``client`` package installed beside this relay, so ``pip install https://RELAY/_relay/dist/<wheel>``
gets exactly the running version with no git host and no package index for the project's own code.

The wheel is built in memory from the package's files (found, never imported: relay/ and client/ do
not import each other), byte for byte the same each time for the same files, so its SHA-256 is stable
and can be pinned in the install line. That works alike from a checkout, an installed relay and the
Docker image. Its dependencies are the client's share of the relay distribution's own requirements.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from . import __version__

#: The distribution name of the served wheel, and its console script.
DIST_NAME = "relay-client"
#: Requirements of the relay distribution that the client needs (the rest are the server's).
CLIENT_REQUIREMENTS = ("asyncssh", "aiohttp", "typer")
#: The optional ``[lab]`` extra: what ``--lab`` starts.
LAB_REQUIREMENTS = ("jupyterlab",)
#: Fixed timestamp of every member (the earliest a zip can hold): same files, same bytes.
_EPOCH = (1980, 1, 1, 0, 0, 0)
_VERSION_LINE = re.compile(r'^__version__ = "([^"]+)"$', re.MULTILINE)
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


class WheelUnavailable(Exception):
    """The client cannot be served (not installed beside the relay, or another version)."""


@dataclass(frozen=True)
class Wheel:
    filename: str
    data: bytes
    sha256: str  # hex, as pip's ``#sha256=`` fragment wants it
    version: str


#: The package the client shares with the relay (asyncssh's tuning), shipped in the same wheel.
SHARED_PACKAGE = "ssh_tuning"


def package_dir(name: str) -> Path:
    """Where package ``name``'s files are, without importing it."""
    spec = importlib.util.find_spec(name)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise WheelUnavailable(f"the {name} package is not installed beside the relay")
    return Path(locations[0])


def client_dir() -> Path:
    return package_dir("client")


def client_version(source: Path) -> str:
    try:
        text = (source / "__init__.py").read_text(encoding="utf-8")
    except OSError as exc:
        raise WheelUnavailable(f"cannot read the client package: {exc}") from exc
    found = _VERSION_LINE.search(text)
    if found is None:
        raise WheelUnavailable("the client package has no __version__")
    return found.group(1)


def _requirement_name(line: str) -> str:
    found = _REQUIREMENT_NAME.match(line)
    return found.group(1).lower().replace("_", "-") if found else ""


def requirements(declared: list[str]) -> list[str]:
    """The client's Requires-Dist lines, taken from the relay distribution's own (one source of
    truth: pyproject.toml), the Lab ones under the ``lab`` extra."""
    out: list[str] = []
    for line in declared:
        name = _requirement_name(line)
        core = name in CLIENT_REQUIREMENTS and "extra ==" not in line
        if core or (name in LAB_REQUIREMENTS and 'extra == "lab"' in line):
            out.append(line)
    return out


def _declared_requirements() -> list[str]:
    try:
        return importlib.metadata.requires("relay-tunnels") or []
    except importlib.metadata.PackageNotFoundError:
        # Run from a bare source tree: the client still installs, and pip resolves what it lacks.
        return [*CLIENT_REQUIREMENTS, 'jupyterlab; extra == "lab"']


def _metadata(version: str, requires: list[str]) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {DIST_NAME}",
        f"Version: {version}",
        "Summary: relay-client: publish a local port or JupyterLab through a Relay server",
        "Requires-Python: >=3.10",
        "Provides-Extra: lab",
        *(f"Requires-Dist: {r}" for r in requires),
    ]
    return "\n".join(lines) + "\n"


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def _sources(source: Path, package: str) -> list[tuple[str, bytes]]:
    """The package's Python files, sorted (no caches, nothing else)."""
    files = sorted(p for p in source.rglob("*.py") if "__pycache__" not in p.parts)
    return [(f"{package}/{p.relative_to(source).as_posix()}", p.read_bytes()) for p in files]


def build(source: Path, version: str, requires: list[str], *, shared: Path | None = None) -> Wheel:
    """A ``py3-none-any`` wheel of the client package at ``source`` (pure, deterministic), with the
    shared package at ``shared`` beside it."""
    dist_info = f"{DIST_NAME.replace('-', '_')}-{version}.dist-info"
    members = _sources(source, "client")
    if not members:
        raise WheelUnavailable(f"no Python files in {source.name}")
    if shared is not None:
        members += _sources(shared, SHARED_PACKAGE)
    members += [
        (f"{dist_info}/METADATA", _metadata(version, requires).encode()),
        (
            f"{dist_info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: relay\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        ),
        (f"{dist_info}/entry_points.txt", b"[console_scripts]\nrelay-client = client.cli:main\n"),
    ]
    record = [_record_line(path, data) for path, data in members] + [f"{dist_info}/RECORD,,"]
    members.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in members:
            info = zipfile.ZipInfo(path, date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    data = buffer.getvalue()
    filename = f"{DIST_NAME.replace('-', '_')}-{version}-py3-none-any.whl"
    return Wheel(filename, data, hashlib.sha256(data).hexdigest(), version)


def locate() -> Wheel:
    """The wheel of the client installed beside this relay; it must be the relay's own version."""
    source = client_dir()
    version = client_version(source)
    if version != __version__:
        raise WheelUnavailable(f"the client beside this relay is version {version}, the relay {__version__}")
    shared = package_dir(SHARED_PACKAGE)
    return build(source, version, requirements(_declared_requirements()), shared=shared)
