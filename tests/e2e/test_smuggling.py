"""Request-smuggling shapes as regression tests over raw sockets to a real relay.

Each request carries a valid token, so only the head parser stands between it and the backend: the
relay must answer 400, close the connection (so the bytes after the head are never read as another
request), and the backend must see nothing at all.
"""

from __future__ import annotations

import re

import pytest

from .conftest import Owned
from .harness import Backend, RelayProcess, raw_request

SMUGGLED = "GET /smuggled HTTP/1.1\r\nHost: {host}\r\nX-Relay-Token: {token}\r\n\r\n"

SHAPES = {
    "cl-then-te": "POST /echo HTTP/1.1\r\nHost: {host}\r\nX-Relay-Token: {token}\r\n"
    "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "te-then-cl": "POST /echo HTTP/1.1\r\nHost: {host}\r\nX-Relay-Token: {token}\r\n"
    "Transfer-Encoding: chunked\r\nContent-Length: 60\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "duplicate-cl-equal": "POST /echo HTTP/1.1\r\nHost: {host}\r\nX-Relay-Token: {token}\r\n"
    "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "duplicate-cl-different": "POST /echo HTTP/1.1\r\nHost: {host}\r\nX-Relay-Token: {token}\r\n"
    "Content-Length: 0\r\nContent-Length: 60\r\n\r\n" + SMUGGLED,
    "cl-list": "POST /echo HTTP/1.1\r\nHost: {host}\r\nX-Relay-Token: {token}\r\n"
    "Content-Length: 5, 5\r\n\r\nhello",
    "obs-fold-te": "POST /echo HTTP/1.1\r\nHost: {host}\r\nX-Relay-Token: {token}\r\n"
    "X-Pad: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "bare-lf-inside-head": "POST /echo HTTP/1.1\r\nHost: {host}\r\nX-Relay-Token: {token}\r\n"
    "X-Pad: a\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "bare-cr-inside-head": "GET /echo HTTP/1.1\r\nHost: {host}\r\nX-Relay-Token: {token}\r\n"
    "X-Pad: a\rContent-Length: 60\r\n\r\n" + SMUGGLED,
    "space-before-colon": "POST /echo HTTP/1.1\r\nHost: {host}\r\nX-Relay-Token: {token}\r\n"
    "Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "vertical-tab-te": "POST /echo HTTP/1.1\r\nHost: {host}\r\nX-Relay-Token: {token}\r\n"
    "Transfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n",
    "te-not-last-chunked": "POST /echo HTTP/1.1\r\nHost: {host}\r\nX-Relay-Token: {token}\r\n"
    "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
    "chunked-in-http10": "POST /echo HTTP/1.0\r\nHost: {host}\r\nX-Relay-Token: {token}\r\n"
    "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "absolute-form-other-host": "GET http://other.localhost/echo HTTP/1.1\r\nHost: {host}\r\n"
    "X-Relay-Token: {token}\r\n\r\n",
    "absolute-form-userinfo": "GET http://{host}@evil.example/echo HTTP/1.1\r\nHost: {host}\r\n"
    "X-Relay-Token: {token}\r\n\r\n",
    "two-hosts": "GET /echo HTTP/1.1\r\nHost: {host}\r\nHost: other.localhost\r\n"
    "X-Relay-Token: {token}\r\n\r\n",
    "no-host-http10": "GET /echo HTTP/1.0\r\nX-Relay-Token: {token}\r\n\r\n",
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
async def test_smuggling_shape_is_refused_and_backend_sees_nothing(
    relay: RelayProcess, backend: Backend, owned: Owned, shape: str
) -> None:
    data = SHAPES[shape].format(host=owned.host, token=owned.token).encode("latin-1")
    out = await raw_request(relay.http_port, data, read_timeout=5)
    statuses = re.findall(rb"^HTTP/1\.1 (\d{3})", out, re.MULTILINE)
    assert statuses == [b"400"], out[:300]
    assert b"Connection: close" in out
    assert backend.seen == []


async def test_absolute_form_with_the_same_host_is_routed_as_origin_form(
    relay: RelayProcess, backend: Backend, owned: Owned
) -> None:
    data = (
        f"GET http://{owned.host}:{relay.http_port}/echo?x=1 HTTP/1.1\r\nHost: {owned.host}\r\n"
        f"X-Relay-Token: {owned.token}\r\nConnection: close\r\n\r\n"
    ).encode()
    out = await raw_request(relay.http_port, data, read_timeout=5)
    assert out.startswith(b"HTTP/1.1 200")
    assert [s["path"] for s in backend.seen] == ["/echo?x=1"]
