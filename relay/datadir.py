"""The data directory: its layout, its permissions, and the lock that keeps one ``relay serve`` per dir."""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

from .errors import StoreError

DB_FILE = "relay.db"
HOST_KEY_FILE = "ssh_host_ed25519_key"
LOCK_FILE = "relay.lock"
#: Written by ``relay serve --store``: the cluster store this data dir's node serves, so that admin
#: commands run with this data dir act on it (and a plain ``relay serve`` here is refused).
STORE_URL_FILE = "store.url"


def recorded_store(data_dir: Path) -> str | None:
    """The cluster store ``data_dir``'s node serves, if it is one."""
    path = data_dir / STORE_URL_FILE
    check_private(path)
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror}") from exc


def record_store(data_dir: Path, url: str) -> None:
    """Remember ``url`` for :func:`recorded_store` (0600: it may hold the database's password)."""
    path = data_dir / STORE_URL_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(url + "\n")
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror}") from exc


def default_data_dir() -> Path:
    """``$RELAY_DATA_DIR``, else ``$XDG_DATA_HOME/relay``, else ``~/.local/share/relay``."""
    env = os.environ.get("RELAY_DATA_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "relay"


def ensure_data_dir(path: Path) -> Path:
    """Create the data dir (mode 0700) if needed and refuse one that others can read."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create data dir {path}: {exc.strerror}") from exc
    check_private(path)
    return path


def check_private(path: Path) -> None:
    """Refuse a secret file or dir that group or others can access, naming it."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise StoreError(
            f"{path} is accessible by other users (mode {stat.S_IMODE(mode):04o}); "
            f"run: chmod {'700' if stat.S_ISDIR(mode) else '600'} {path}"
        )


class DataDirLock:
    """An exclusive ``flock`` on ``relay.lock``; released when the process exits, even on a crash."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreError(
                f"another relay serve (pid {holder}) is running on {self.path.parent}; "
                "stop it or use another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def is_serving(data_dir: Path) -> bool:
    """True if a ``relay serve`` holds the lock of ``data_dir`` right now."""
    path = data_dir / LOCK_FILE
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
