"""The request-head parser against h11, the reference HTTP/1.1 parser, under hypothesis.

Generated heads vary what smuggling and routing hinge on: absolute-form targets (valid and broken
IPv6 literals, ports, userinfo, empty authorities), the Host header, and the framing fields. The
relay must reach the verdict of h11 combined with its own documented, stricter rules (one model
below, written from docs/protocol.md, not from the relay's code), and for every head both accept,
the same framing: the body h11 expects is exactly the body the relay would forward.
"""

from __future__ import annotations

import ipaddress
import re

import h11
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.errors import RelayError
from relay.http1 import Framing, RequestHead, parse_request_head

HOSTS = [
    "lab.example.com",
    "LAB.example.com.",
    "lab.example.com:8080",
    "127.0.0.1",
    "[::1]",
    "[::1]:443",
    "[2001:db8::1]",
    "[::ffff:192.0.2.1]",
    "[::1",  # unbalanced
    "[1::2::3]",  # two "::"
    "[fe80::1%25eth0]",  # a zone
    "[v1.x]",  # IPvFuture
    "[]",
    "::1",  # unbracketed
    "lab.example.com:99999",
    "lab.example.com:",
    "",
    "user@lab.example.com",
    "bad_host",
]
PATHS = ["", "/", "/x?y=1", "?q", "/a#frag", "//double", "/%2e%2e/"]
FRAMING = [
    [],
    [("Content-Length", "5")],
    [("Content-Length", "0")],
    [("Content-Length", "5, 5")],
    [("Content-Length", "5"), ("Content-Length", "5")],
    [("Content-Length", "-1")],
    [("Transfer-Encoding", "chunked")],
    [("Transfer-Encoding", "Chunked ")],
    [("Transfer-Encoding", "gzip, chunked")],
    [("Transfer-Encoding", "chunked, chunked")],
    [("Transfer-Encoding", "chunked"), ("Content-Length", "5")],
]


def _host_valid(authority: str) -> str | None:
    """The model's Host rule (protocol.md, Hosts): a DNS name or IP literal, optional port 0-65535."""
    value = authority.lower()
    if value.startswith("["):
        inner, sep, rest = value[1:].partition("]")
        if not sep or (rest and not re.fullmatch(r":\d{1,5}", rest)) or (rest and int(rest[1:]) > 65535):
            return None
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            return None
        return None if "%" in inner else f"[{inner}]"
    host, sep, port = value.partition(":")
    if sep and not (port.isdigit() and len(port) <= 5 and int(port) <= 65535):
        return None
    host = host.removesuffix(".")
    label = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
    return host if len(host) <= 253 and re.fullmatch(rf"{label}(\.{label})*", host) else None


def _relay_rules(method: str, target: str, host: str, framing: list[tuple[str, str]]) -> bool:
    """What the relay refuses beyond h11 (protocol.md, Bad requests)."""
    normal = _host_valid(host)
    if normal is None or method == "CONNECT":
        return False
    if not (target.startswith("/") or (target == "*" and method == "OPTIONS")):
        scheme, sep, rest = target.partition("://")
        if not sep or scheme.lower() not in ("http", "https"):
            return False
        authority = re.match(r"[^/?#]*", rest)
        assert authority is not None
        if "@" in authority[0] or _host_valid(authority[0]) != normal:
            return False
    names = [k.lower() for k, _ in framing]
    if "transfer-encoding" in names and "content-length" in names:
        return False
    lengths = [v for k, v in framing if k.lower() == "content-length"]
    return len(lengths) <= 1 and all(re.fullmatch(r"\d{1,18}", v) for v in lengths)


def _h11(head: bytes) -> tuple[bool, h11.Connection]:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return False, conn
    return isinstance(event, h11.Request), conn


def _body_for(head: RequestHead) -> bytes:
    if head.framing is Framing.LENGTH:
        return b"x" * head.length
    if head.framing is Framing.CHUNKED:
        return b"3\r\nabc\r\n0\r\n\r\n"
    return b""


def _h11_takes_exactly(conn: h11.Connection, body: bytes) -> bool:
    """h11 ends the message exactly at the end of ``body``, as the relay's framing would."""
    if body:
        conn.receive_data(body)  # (empty data would tell h11 the connection closed)
    while True:
        event = conn.next_event()
        if isinstance(event, h11.EndOfMessage):
            return conn.trailing_data == (b"", False)
        if event is h11.NEED_DATA:
            return False
        assert isinstance(event, h11.Data)


targets = st.one_of(
    st.sampled_from(PATHS[1:]),
    st.builds(
        lambda s, a, p: f"{s}://{a}{p}",
        st.sampled_from(["http", "https", "HTTP", "ftp"]),
        st.sampled_from(HOSTS),
        st.sampled_from(PATHS),
    ),
    st.just("*"),
)


@settings(max_examples=600, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "OPTIONS", "CONNECT"]),
    target=targets,
    host=st.sampled_from(HOSTS),
    framing=st.sampled_from(FRAMING),
)
def test_the_head_parser_agrees_with_h11_and_the_documented_rules(
    method: str, target: str, host: str, framing: list[tuple[str, str]]
) -> None:
    fields = [("Host", host), *framing]
    raw = (f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields) + "\r\n").encode()
    h11_ok, conn = _h11(raw)
    expected = h11_ok and _relay_rules(method, target, host, framing)
    try:
        head = parse_request_head(raw)
    except RelayError:
        assert not expected, f"refused what h11 and the rules accept: {raw!r}"
        return
    assert expected, f"accepted what {'the rules' if h11_ok else 'h11'} refuse: {raw!r}"
    assert _h11_takes_exactly(conn, _body_for(head)), f"framing differs from h11: {raw!r}"
