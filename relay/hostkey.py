"""The relay's SSH host key: ed25519, generated on first start, kept 0600 in the data dir."""

from __future__ import annotations

import os
from pathlib import Path

import asyncssh

from .datadir import HOST_KEY_FILE, check_private
from .errors import StoreError


def load_or_create(data_dir: Path) -> asyncssh.SSHKey:
    path = data_dir / HOST_KEY_FILE
    if not path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519", comment="relay host key")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key.export_private_key())
        return key
    check_private(path)
    try:
        return asyncssh.read_private_key(path)
    except (OSError, asyncssh.KeyImportError) as exc:
        raise StoreError(f"cannot read host key {path}: {exc}") from exc


def fingerprint(key: asyncssh.SSHKey) -> str:
    """``SHA256:...``, as OpenSSH prints it."""
    return str(key.get_fingerprint("sha256"))
