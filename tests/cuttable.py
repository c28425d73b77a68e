"""A TCP forwarder on loopback whose far end can fall silent: what a database behind a cut network
looks like to its clients (connections made before the cut break; new ones are taken and never
answered), made with real sockets so the driver's own timeouts and errors are the ones tested."""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class Cuttable:
    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.accepted = 0  # connections taken, forwarded or not
        self._cut = False
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                self.accepted += 1
                self._open.append(client)
                if self._cut:
                    continue  # held open, never answered
            upstream = socket.create_connection(self._target)
            with self._lock:
                self._open.append(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def cut(self) -> None:
        """Break every connection and answer no new one."""
        with self._lock:
            self._cut = True
            _close_all(self._open)

    def mend(self) -> None:
        with self._lock:
            self._cut = False
            _close_all(self._open)  # the silent ones, which their clients gave up on

    def __enter__(self) -> Cuttable:
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._listener.close()
        with self._lock:
            _close_all(self._open)


def _close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
    sockets.clear()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)
