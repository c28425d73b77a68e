"""A minimal HTTP/1.1 visitor for the measurements wrk cannot make: one GET on a fresh connection,
with the body read into a preallocated buffer by a blocking socket (so the client costs as little
CPU as possible and the timing is of the path, not of Python), and its SHA-256 taken afterwards."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from dataclasses import dataclass, field

#: Read size for bodies, bytes.
RECV_CHUNK = 1 << 20
#: Seconds a benchmark request may take before it counts as failed.
REQUEST_TIMEOUT = 120.0


@dataclass(frozen=True)
class Endpoint:
    """Where a visitor connects (127.0.0.1:port) and what it sends to be routed and let in."""

    port: int
    host: str
    headers: dict[str, str] = field(default_factory=dict)

    def request(self, path: str, *, close: bool = True) -> bytes:
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host}"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        if close:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class Download:
    status: int
    length: int
    seconds: float  # from sending the request to the last body byte
    sha256: str

    @property
    def mb_per_s(self) -> float:
        return self.length / self.seconds / 1e6


class Downloader:
    """Downloads into one buffer, reused: a 256 MiB body is read without allocating per chunk."""

    def __init__(self, size: int) -> None:
        self.buffer = bytearray(size)

    def get(self, endpoint: Endpoint, path: str) -> Download:
        with socket.create_connection(("127.0.0.1", endpoint.port), timeout=REQUEST_TIMEOUT) as sock:
            started = time.perf_counter()
            sock.sendall(endpoint.request(path))
            status, length, body_start = _read_head(sock)
            if length > len(self.buffer):
                raise RuntimeError(f"body of {length} bytes is larger than the buffer")
            view = memoryview(self.buffer)
            view[: len(body_start)] = body_start
            got = len(body_start)
            while got < length:
                n = sock.recv_into(view[got:length], min(RECV_CHUNK, length - got))
                if n == 0:
                    break
                got += n
            seconds = time.perf_counter() - started
        return Download(status, got, seconds, hashlib.sha256(view[:got]).hexdigest())

    async def aget(self, endpoint: Endpoint, path: str) -> Download:
        return await asyncio.to_thread(self.get, endpoint, path)


def _read_head(sock: socket.socket) -> tuple[int, int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError(f"connection closed before the response head: {data[:200]!r}")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
        if name.strip().lower() == "transfer-encoding":
            raise RuntimeError("chunked responses are not expected from a static file")
    return status, length, rest


async def fetch(endpoint: Endpoint, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """One small GET on a fresh connection: (status, body). Errors are raised."""

    async def go() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
        try:
            writer.write(endpoint.request(path))
            data = await reader.read()  # Connection: close, so the body ends with the connection
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        if not head:
            raise ConnectionError("empty response")
        return int(head.split(b" ", 2)[1]), body

    return await asyncio.wait_for(go(), timeout)


async def wait_working(
    endpoint: Endpoint, path: str, body: bytes | None, *, timeout: float = 60.0, interval: float = 0.002
) -> float:
    """Poll ``path`` until it answers 200 (with ``body``, if given); returns the seconds it took.
    Anything else (refused, 404 or 502 while a tunnel comes up) is retried every ``interval``."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    last: object = None
    while loop.time() - started < timeout:
        try:
            status, got = await fetch(endpoint, path)
        except (OSError, asyncio.TimeoutError, ValueError, IndexError) as exc:
            last = exc
        else:
            if status == 200 and (body is None or got == body):
                return loop.time() - started
            last = f"status {status}, {len(got)} bytes"
        await asyncio.sleep(interval)
    raise TimeoutError(f"{endpoint.host}{path} did not work within {timeout:.0f} s (last: {last})")
