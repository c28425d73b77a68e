"""HTTP/1.1 message heads: strict parsing and serialising, no I/O.

The relay parses every request head (routing and auth are per request) and every response head (for
its framing), and streams bodies as they are. Parsing is deliberately strict where a lenient reading
would let two parsers disagree about where a message ends (request smuggling): bare LF or CR, obs-fold,
whitespace before the colon, Content-Length together with Transfer-Encoding, and repeated
Content-Length are all refused. RFC 9112 is the reference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

from .errors import BadGateway, BadRequest, RelayError
from .names import normalise_host
from .protocol import MAX_HEADERS

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# The target is visible ASCII only (RFC 9112 §3.2): bytes over 0x7f would be read differently by
# parsers that decode them.
_REQUEST_LINE = re.compile(rf"({_TOKEN}) ([\x21-\x7e]+) HTTP/(\d)\.(\d)")
_STATUS_LINE = re.compile(r"HTTP/1\.([01]) ([1-9]\d\d)(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?")
_HEADER_NAME = re.compile(_TOKEN)
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_DIGITS = re.compile(r"[0-9]{1,18}")

Headers = list[tuple[str, str]]


class Fields(list[tuple[str, str]]):
    """The header fields of a parsed head, in order, with their lowercased names and an index by
    name, made once: routing, auth, rewriting and the log look fields up a dozen times per request.

    A parsed head's fields are never changed (what is forwarded is a new list), so the index holds."""

    __slots__ = ("first", "names", "repeated")

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__(pairs)
        #: the lowercased names, in order (what the rewrite rules compare)
        self.names = names = [name.lower() for name, _ in pairs]
        #: the value of each name, when no name is repeated (the usual head)
        self.first = dict(zip(names, [value for _, value in pairs], strict=True))
        self.repeated = len(self.first) != len(names)

    def values(self, lname: str) -> list[str]:
        """All values of the lowercased name ``lname``, in order."""
        if self.repeated:
            return [value for name, (_, value) in zip(self.names, self, strict=True) if name == lname]
        value = self.first.get(lname)
        return [value] if value is not None else []


class Framing(Enum):
    NONE = "none"  # no body
    LENGTH = "length"  # Content-Length bytes
    CHUNKED = "chunked"  # chunked transfer coding
    CLOSE = "close"  # until the connection closes (responses only)


def _split_head(head: bytes, error: type[RelayError]) -> list[str]:
    if not head.endswith(b"\r\n\r\n"):
        raise error("incomplete message head")
    body = head[:-4]
    # Every LF must be part of a CRLF and every CR must start one.
    if body.count(b"\n") != body.count(b"\r\n") or body.count(b"\r") != body.count(b"\r\n"):
        raise error("bare CR or LF in message head")
    return body.decode("latin-1").split("\r\n")


def _parse_fields(lines: list[str], error: type[RelayError], max_headers: int) -> Headers:
    if len(lines) > max_headers:
        raise RelayError(f"more than {max_headers} header fields", status=431)
    headers: Headers = []
    for line in lines:
        if not line:
            raise error("empty line inside message head")
        if line[0] in " \t":
            raise error("obsolete line folding is not accepted")
        name, sep, value = line.partition(":")
        if not sep or not _HEADER_NAME.fullmatch(name):
            raise error(f"malformed header field {line[:40]!r}")
        value = value.strip(" \t")
        if _BAD_VALUE.search(value):
            raise error(f"control character in header {name!r}")
        headers.append((name, value))
    return headers


def get_all(headers: Headers, name: str) -> list[str]:
    """All values of ``name`` (case-insensitive), in order."""
    lname = name.lower()
    if type(headers) is Fields:
        return headers.values(lname)
    return [v for k, v in headers if k.lower() == lname]


def lowered_names(headers: Headers) -> list[str]:
    """The lowercased names of ``headers``, in order (a parsed head has them already)."""
    if type(headers) is Fields:
        return headers.names
    return [name.lower() for name, _ in headers]


def get_one(headers: Headers, name: str) -> str | None:
    values = get_all(headers, name)
    return values[0] if values else None


def list_tokens(headers: Headers, name: str) -> list[str]:
    """The comma-separated tokens of every ``name`` field, lowercased, in order. Only SP and HTAB are
    stripped (RFC 9110 OWS): str.strip() would also remove Unicode spaces such as U+00A0 or U+0085,
    and make ``chunked\xa0`` look like ``chunked`` to the relay but not to the backend."""
    return [t for v in get_all(headers, name) for t in (p.strip(" \t").lower() for p in v.split(",")) if t]


def connection_tokens(headers: Headers) -> set[str]:
    return set(list_tokens(headers, "connection"))


def _body_framing(headers: Headers, error: type[RelayError]) -> tuple[Framing, int]:
    te = get_all(headers, "transfer-encoding")
    cl = get_all(headers, "content-length")
    if te and cl:
        raise error("both Transfer-Encoding and Content-Length")
    if te:
        # Exactly one coding, chunked: the relay forwards bodies as they are and must know where
        # they end; another coding (gzip, ...) or chunked twice is where parsers disagree.
        if list_tokens(headers, "transfer-encoding") != ["chunked"]:
            raise error("Transfer-Encoding other than a single chunked")
        return Framing.CHUNKED, 0
    if cl:
        if len(cl) > 1 or not _DIGITS.fullmatch(cl[0]):
            raise error("invalid or repeated Content-Length")
        length = int(cl[0])
        return (Framing.LENGTH, length) if length else (Framing.NONE, 0)
    return Framing.NONE, 0


@dataclass
class RequestHead:
    method: str
    target: str  # origin-form (or "*")
    version: tuple[int, int]
    headers: Headers
    host: str  # normalised
    raw_host: str  # as sent, for X-Forwarded-Host
    framing: Framing
    length: int
    # Read several times per request (routing, auth, rewriting, the log) and fixed by the fields
    # above (never changed after the parse): worked out once.
    path: str = field(init=False)
    query: str = field(init=False)
    is_upgrade: bool = field(init=False)
    keep_alive: bool = field(init=False)

    def __post_init__(self) -> None:
        self.path, _, self.query = self.target.partition("?")
        tokens = connection_tokens(self.headers)
        self.is_upgrade = "upgrade" in tokens and bool(get_one(self.headers, "upgrade"))
        self.keep_alive = "close" not in tokens if self.version >= (1, 1) else "keep-alive" in tokens


def parse_request_head(head: bytes, *, max_headers: int = MAX_HEADERS) -> RequestHead:
    """Parse a request head ending in CRLFCRLF; raises :class:`BadRequest` (or 431/501/505)."""
    lines = _split_head(head, BadRequest)
    match = _REQUEST_LINE.fullmatch(lines[0])
    if not match:
        raise BadRequest("malformed request line")
    method, target, major, minor = match.groups()
    if (int(major), int(minor)) not in ((1, 0), (1, 1)):
        raise RelayError("only HTTP/1.0 and HTTP/1.1 are supported", status=505)
    version = (int(major), int(minor))
    headers = Fields(_parse_fields(lines[1:], BadRequest, max_headers))
    hosts = get_all(headers, "host")
    if len(hosts) != 1:
        raise BadRequest("a request needs exactly one Host header")
    host = normalise_host(hosts[0])
    if host is None:
        raise BadRequest("invalid Host header")
    if method == "CONNECT":
        raise RelayError("CONNECT is not supported", status=405)
    if target.startswith("/") or (target == "*" and method == "OPTIONS"):
        pass
    elif target[:8].lower().startswith(("http://", "https://")):
        target = _origin_form(target, host)
    else:
        raise BadRequest("invalid request target")
    framing, length = _body_framing(headers, BadRequest)
    if framing is Framing.CHUNKED and version < (1, 1):
        raise BadRequest("chunked Transfer-Encoding in an HTTP/1.0 request")
    return RequestHead(method, target, version, headers, host, hosts[0], framing, length)


def _origin_form(target: str, host: str) -> str:
    """An absolute-form target as the origin form sent on (RFC 9112 §3.2.2); its authority must name
    the Host header's host and carry no userinfo. Parsed here rather than with urlsplit, which raises
    ValueError on input such as ``http://[::1/`` and accepts what the Host rule refuses."""
    rest = target.partition("://")[2]
    end = next((i for i, c in enumerate(rest) if c in "/?#"), len(rest))
    authority, remainder = rest[:end], rest[end:].partition("#")[0]
    if "@" in authority or normalise_host(authority) != host:
        raise BadRequest("absolute request target does not match Host")
    return remainder if remainder.startswith("/") else "/" + remainder


def serialise_request(head: RequestHead, headers: Headers) -> bytes:
    lines = [f"{head.method} {head.target} HTTP/{head.version[0]}.{head.version[1]}"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class ResponseHead:
    version: tuple[int, int]
    status: int
    reason: str
    headers: Headers

    @property
    def keep_alive(self) -> bool:
        tokens = connection_tokens(self.headers)
        if self.version >= (1, 1):
            return "close" not in tokens
        return "keep-alive" in tokens


def parse_response_head(head: bytes, *, max_headers: int = MAX_HEADERS) -> ResponseHead:
    """Parse a backend's response head; anything off raises :class:`BadGateway`."""
    lines = _split_head(head, BadGateway)
    match = _STATUS_LINE.fullmatch(lines[0])
    if not match:
        raise BadGateway("backend sent a malformed status line")
    minor, status, reason = match.groups()
    try:
        headers = Fields(_parse_fields(lines[1:], BadGateway, max_headers))
    except BadGateway:
        raise
    except RelayError as exc:
        raise BadGateway(f"backend response: {exc}") from exc
    return ResponseHead((1, int(minor)), int(status), reason or "", headers)


def response_framing(resp: ResponseHead, request_method: str) -> tuple[Framing, int]:
    """How the response body ends (RFC 9112 §6.3), given the request it answers."""
    if request_method == "HEAD" or resp.status < 200 or resp.status in (204, 304):
        return Framing.NONE, 0
    if resp.version < (1, 1) and get_all(resp.headers, "transfer-encoding"):
        # RFC 9112 §6.1: the framing of an HTTP/1.0 message with Transfer-Encoding is faulty.
        raise BadGateway("backend sent Transfer-Encoding in an HTTP/1.0 response")
    framing, length = _body_framing(resp.headers, BadGateway)
    if framing is Framing.NONE and not get_all(resp.headers, "content-length"):
        return Framing.CLOSE, 0
    return framing, length


def serialise_response(resp: ResponseHead, headers: Headers) -> bytes:
    reason = f" {resp.reason}" if resp.reason else " "
    lines = [f"HTTP/{resp.version[0]}.{resp.version[1]} {resp.status}{reason}"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def simple_response(
    status: int, reason: str, headers: Headers, body: bytes, *, keep_alive: bool = True
) -> bytes:
    """A complete response the relay answers itself."""
    all_headers = [*headers, ("Content-Length", str(len(body)))]
    if not keep_alive:
        all_headers.append(("Connection", "close"))
    return serialise_response(ResponseHead((1, 1), status, reason, []), all_headers) + body
