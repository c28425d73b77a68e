"""The one secret a notebook needs (DESIGN §3.7): ``relay://USER:TOKEN@HOST:SSHPORT#SHA256:FINGERPRINT``.

The fingerprint lets the client pin the relay's host key before its first connection, so no trust on
first use is involved. The running relay records where clients reach its SSH (its public host and SSH
port) in the store, so admin commands print the same string as the first start.
"""

from __future__ import annotations

from pathlib import Path

import asyncssh

from . import hostkey
from .datadir import HOST_KEY_FILE
from .errors import StoreError
from .store import Store

SCHEME = "relay://"
DEFAULT_SSH_PORT = 2222


def connect_string(user: str, token: str, host: str, port: int, fingerprint: str | None) -> str:
    address = f"[{host}]" if ":" in host else host
    return f"{SCHEME}{user}:{token}@{address}:{port}" + (f"#{fingerprint}" if fingerprint else "")


def ssh_endpoint(store: Store) -> tuple[str, int]:
    """Where clients reach the relay's SSH, as it last ran (its domain and 2222 before its first start)."""
    recorded = store.setting("ssh_endpoint")
    if recorded:
        host, _, port = recorded.rpartition(":")
        if port.isdigit():
            return host, int(port)
    return store.relay_domain(), DEFAULT_SSH_PORT


def host_fingerprint(store: Store, data_dir: Path) -> str | None:
    """The relay's host key fingerprint, if the key exists (it is made on the first start)."""
    if store.clustered:
        text = store.cluster_key(hostkey.CLUSTER_KEY)
        return hostkey.fingerprint(asyncssh.import_private_key(text)) if text else None
    if not (data_dir / HOST_KEY_FILE).exists():
        return None
    try:
        return hostkey.fingerprint(hostkey.load_or_create(data_dir))
    except StoreError:
        return None


def for_token(store: Store, data_dir: Path, user: str, token: str) -> str:
    host, port = ssh_endpoint(store)
    return connect_string(user, token, host, port, host_fingerprint(store, data_dir))
