"""Client settings: flags, then ``RELAY_*`` environment variables, then Colab secrets, then the saved
profile written by ``relay-client login``. Also the pinned relay host keys."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_SSH_PORT = 2222
PROFILE_FILE = "profile.json"
PINS_FILE = "known_relays.json"
#: The relay's SSH-over-WebSocket endpoint (its path on the relay host).
SSH_WS_PATH = "/_relay/ssh"


class ClientError(Exception):
    """A problem the person must fix; ``str()`` says how."""


def config_dir() -> Path:
    """``$RELAY_CLIENT_HOME``, else ``$XDG_CONFIG_HOME/relay-client``, else ``~/.config/relay-client``."""
    env = os.environ.get("RELAY_CLIENT_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".config") / "relay-client"


def parse_relay(value: str) -> tuple[str, int]:
    """``HOST[:PORT]`` (``[v6]:PORT`` too) → (host, port); the SSH port defaults to 2222."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest.removeprefix(":") or str(DEFAULT_SSH_PORT)
    elif value.count(":") == 1:
        host, port = value.split(":")
    else:
        host, port = value, str(DEFAULT_SSH_PORT)
    if not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClientError(f"invalid relay address {value!r}: expected HOST or HOST:PORT")
    return host, int(port)


#: The one secret a notebook needs (DESIGN §3.7): relay://USER:TOKEN@HOST:SSHPORT#SHA256:FINGERPRINT.
CONNECT_SCHEME = "relay://"
_CONNECT_FORM = "relay://USER:TOKEN@HOST:PORT#SHA256:FINGERPRINT"


def wss_url(value: str) -> str:
    """``wss://HOST[:PORT][/_relay/ssh]`` (``ws://`` for a relay without TLS, e.g. on loopback)."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("wss", "ws") or not parts.hostname:
        raise ClientError(f"invalid WebSocket URL {value!r}: expected wss://HOST[:PORT]{SSH_WS_PATH}")
    if parts.path not in ("", "/", SSH_WS_PATH) or parts.query or parts.fragment or parts.username:
        raise ClientError(f"invalid WebSocket URL {value!r}: the relay's path is {SSH_WS_PATH}")
    return f"{parts.scheme}://{parts.netloc}{SSH_WS_PATH}"


@dataclass(frozen=True)
class ConnectString:
    user: str
    token: str
    host: str
    port: int
    fingerprint: str | None  # "SHA256:...": the relay's host key, pinned before the first connection


def parse_connect_string(value: str) -> ConnectString:
    """A connect string, or :class:`ClientError` naming the part that is wrong (never echoing the token)."""
    text = value.strip()
    if not text.startswith(CONNECT_SCHEME):
        raise ClientError(f"a connect string starts with {CONNECT_SCHEME} ({_CONNECT_FORM})")
    rest, hash_mark, fragment = text[len(CONNECT_SCHEME) :].partition("#")
    userinfo, at, address = rest.rpartition("@")
    if not at:
        raise ClientError(f"the connect string has no USER:TOKEN@ before the host ({_CONNECT_FORM})")
    user, colon, token = userinfo.partition(":")
    if not user or not all(c.isalnum() or c == "-" for c in user):
        raise ClientError(f"the connect string's user is missing or not a relay user name ({_CONNECT_FORM})")
    if not colon or not token or any(c in token for c in " /?#"):
        raise ClientError(f"the connect string's token is missing or malformed ({_CONNECT_FORM})")
    if not address or "/" in address:
        raise ClientError(f"the connect string's HOST:PORT is missing or malformed ({_CONNECT_FORM})")
    try:
        host, port = parse_relay(address)
    except ClientError:
        raise ClientError(
            f"the connect string's HOST:PORT {address[:80]!r} is not valid ({_CONNECT_FORM})"
        ) from None
    fingerprint = fragment or None
    if hash_mark and (fingerprint is None or not fingerprint.startswith("SHA256:") or len(fingerprint) < 20):
        raise ClientError(f"the connect string's fingerprint must look like SHA256:... ({_CONNECT_FORM})")
    return ConnectString(user, token, host, port, fingerprint)


@dataclass
class Profile:
    relay: str | None = None
    user: str | None = None
    token: str | None = None


def _write_private(path: Path, doc: object) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(doc, out, indent=2)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written file


def _read(path: Path) -> dict[str, object]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ClientError(f"cannot read {path}: {exc}; fix or delete it") from exc
    if not isinstance(doc, dict):
        raise ClientError(f"{path} is not a JSON object; fix or delete it")
    return doc


def load_profile(directory: Path) -> Profile:
    doc = _read(directory / PROFILE_FILE)
    return Profile(**{k: str(v) for k, v in doc.items() if k in ("relay", "user", "token") and v})


def save_profile(directory: Path, profile: Profile) -> Path:
    path = directory / PROFILE_FILE
    _write_private(path, {k: v for k, v in asdict(profile).items() if v})
    return path


def colab_secret(name: str) -> str | None:
    """A secret from Colab's secrets panel, when running in Colab with notebook access granted."""
    try:
        from google.colab import userdata  # type: ignore[import-not-found]
    except ImportError:
        return None
    with contextlib.suppress(Exception):  # not found, or access not granted: fall through
        value = userdata.get(name)
        return str(value) if value else None
    return None


def resolve(
    flag: str | None, env_name: str, saved: str | None, secret: Callable[[str], str | None] = colab_secret
) -> str | None:
    """One setting, by precedence: flag, environment, Colab secret, saved profile."""
    if flag:
        return flag
    if os.environ.get(env_name):
        return os.environ[env_name]
    return secret(env_name) or saved


def one_secret(relay_flag: str | None) -> ConnectString | None:
    """The connect string in effect: ``--relay relay://...``, else (no --relay at all) ``RELAY_URL``
    from the environment or a Colab secret; None if neither says one."""
    if relay_flag:
        return parse_connect_string(relay_flag) if relay_flag.startswith(CONNECT_SCHEME) else None
    url = resolve(None, "RELAY_URL", None)
    return parse_connect_string(url) if url else None


class HostKeyPins:
    """Relay host keys pinned on first use, by ``host:port``, in a 0600 JSON file."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / PINS_FILE

    def get(self, relay: str) -> str | None:
        value = _read(self.path).get(relay)
        return str(value) if value else None

    def pin(self, relay: str, fingerprint: str) -> None:
        doc = _read(self.path)
        doc[relay] = fingerprint
        _write_private(self.path, doc)
