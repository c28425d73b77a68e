"""The relay's SSH host key: ed25519, generated on first start, kept 0600 in the data dir.

A cluster's nodes must all show clients the same key (their pins hold whichever node they reach),
so there it lives in the shared store instead, made once by the first node to start.
"""

from __future__ import annotations

import os
from pathlib import Path

import asyncssh

from .datadir import HOST_KEY_FILE, check_private
from .errors import StoreError
from .store import Store

#: The host key's name in a cluster store's ``cluster_keys``.
CLUSTER_KEY = "ssh_host_key"


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


def shared(store: Store) -> asyncssh.SSHKey:
    """The cluster's host key, made now if no node made it yet."""
    text = store.cluster_key(CLUSTER_KEY)
    if text is None:
        fresh = asyncssh.generate_private_key("ssh-ed25519", comment="relay host key")
        text = store.cluster_key_once(CLUSTER_KEY, fresh.export_private_key().decode())
    try:
        return asyncssh.import_private_key(text)
    except asyncssh.KeyImportError as exc:
        raise StoreError(f"the cluster's host key in {store.where} is unreadable: {exc}") from exc


def for_store(store: Store, data_dir: Path) -> asyncssh.SSHKey:
    """The host key this relay serves with: the cluster's, or the data dir's."""
    return shared(store) if store.clustered else load_or_create(data_dir)


def exported(data_dir: Path) -> str | None:
    """The data dir's host key as text (for ``relay store migrate``), if there is one."""
    path = data_dir / HOST_KEY_FILE
    return load_or_create(data_dir).export_private_key().decode() if path.exists() else None
