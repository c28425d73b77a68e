"""A real PostgreSQL server for the tests: Debian's binaries, a temporary cluster, loopback only.

`initdb` refuses to run as root, so under root the cluster belongs to the ``postgres`` system user
that Debian's package creates. The server listens on 127.0.0.1 at a free port and on a Unix socket
in its own directory; it trusts local connections (test data only) and skips fsync (nothing here
must survive a power cut).
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

SUPERUSER = "relay"


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version_key)
    if not versions:
        raise RuntimeError(f"{name} not found: install Debian's postgresql package (.ci/run does)")
    return versions[-1]


def _version_key(path: str) -> int:
    part = path.split("/")[4]
    return int(part) if part.isdigit() else 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="relay-pg-"))
        self.port = _free_port()
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = "postgres"
            entry = pwd.getpwnam(self._user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self._proc: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)

    def _run(self, args: list[str]) -> None:
        done = subprocess.run(args, capture_output=True, user=self._user, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stderr.decode(errors='replace')[-2000:]}")

    def start(self) -> None:
        data = self.dir / "data"
        self._run([_binary("initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                   "--locale=C", "--no-sync"])  # fmt: skip
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.dir),
            "max_connections": "300",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        args = [_binary("postgres"), "-D", str(data)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        with open(self.dir / "server.log", "wb") as log:  # the child keeps its own descriptor
            self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, user=self._user)
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start: {self.log()[-2000:]}") from None
                time.sleep(0.1)

    def log(self) -> str:
        path = self.dir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"t{next(self._names)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGQUIT)  # immediate shutdown: the data is thrown away
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


_shared: PostgresServer | None = None


def shared_server() -> PostgresServer:
    """The one server of this test process, started on first use and stopped at exit."""
    global _shared
    if _shared is None:
        server = PostgresServer()
        server.start()
        atexit.register(server.stop)
        _shared = server
    return _shared
