"""The relay's own replies: their type, the one serialiser, and the one edge where a typed error
(:mod:`relay.errors`) becomes a reply a visitor sees."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import pages
from ..errors import RelayError, ServiceUnavailable, TooManyRequests
from ..http1 import Headers, ResponseHead, serialise_response

if TYPE_CHECKING:
    from ..store import Store

_REASONS = {
    200: "OK", 204: "No Content", 302: "Found", 303: "See Other", 308: "Permanent Redirect",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 410: "Gone",
    411: "Length Required", 413: "Content Too Large", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}  # fmt: skip

_NO_STORE = ("Cache-Control", "no-store")


def reason(status: int) -> str:
    return _REASONS.get(status, "Error")


@dataclass
class Reply:
    """A complete response the relay answers itself (never a backend's)."""

    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    #: Store writes this reply depends on (a new session): done, off the event loop, before it is
    #: sent; if one fails the visitor gets 503 instead.
    writes: list[Callable[[Store], object]] = field(default_factory=list)

    @classmethod
    def html(cls, status: int, body: bytes, headers: Headers | None = None) -> Reply:
        return cls(status, [("Content-Type", "text/html; charset=utf-8"), _NO_STORE, *(headers or [])], body)

    @classmethod
    def json(cls, status: int, doc: object, headers: Headers | None = None) -> Reply:
        body = json.dumps(doc).encode()
        return cls(status, [("Content-Type", "application/json"), _NO_STORE, *(headers or [])], body)

    @classmethod
    def redirect(cls, status: int, location: str, headers: Headers | None = None) -> Reply:
        return cls(status, [("Location", location), _NO_STORE, *(headers or [])], b"")

    @classmethod
    def error(cls, status: int, message: str, *, html: bool, headers: Headers | None = None) -> Reply:
        if html:
            return cls.html(status, pages.error_page(status, reason(status), message), headers)
        return cls.json(status, {"error": message, "status": status}, headers)

    @classmethod
    def from_error(cls, exc: RelayError, *, html: bool) -> Reply:
        """The one edge: a typed error as the visitor sees it (with ``Retry-After`` where it has one)."""
        headers: Headers = []
        if isinstance(exc, (TooManyRequests, ServiceUnavailable)):
            headers.append(("Retry-After", str(exc.retry_after)))
        return cls.error(exc.status, str(exc), html=html, headers=headers)

    def encode(self, *, keep: bool, head_only: bool = False) -> bytes:
        """The bytes on the wire: ``Content-Length`` always, ``Connection: close`` unless ``keep``."""
        headers = [*self.headers, ("Content-Length", str(len(self.body)))]
        if not keep:
            headers.append(("Connection", "close"))
        data = serialise_response(ResponseHead((1, 1), self.status, reason(self.status), []), headers)
        return data if head_only else data + self.body
