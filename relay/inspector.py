"""The live request inspector (DESIGN §3.6): the last requests of each tunnel, in memory, and the
people watching them (an SSH session with a pty, ``log HOST``, the dashboard's event stream).

A row holds what a person needs to see what their app is serving and nothing that could let anyone
in: no bodies, no header values, and query values that look like credentials are replaced. Memory is
bounded twice: rows per tunnel, and tunnels kept (the least recently active go first).
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

log = logging.getLogger(__name__)

#: Longest path shown (after escaping), characters.
MAX_PATH = 200
#: Query parameters whose values are never shown, whatever they hold (lower-cased names; a name that
#: contains one of these counts: ``access_token``, ``api_key``, ``relay_token``).
SECRET_NAMES = ("token", "key", "password", "passwd", "secret", "auth", "session", "code", "sig")
_TOKEN_SHAPED = re.compile(r"rly_[0-9a-fA-F]{4,}|[A-Za-z0-9_\-]{32,}|eyJ[A-Za-z0-9_\-]+\.")
REDACTED = "[redacted]"


def _secret_value(name: str, value: str) -> bool:
    lowered = name.lower()
    return any(part in lowered for part in SECRET_NAMES) or bool(_TOKEN_SHAPED.search(value))


def shown_path(path: str, query: str) -> str:
    """``path?query`` as the inspector shows it: credential-like query values redacted, every
    character outside printable ASCII escaped (``\\x1b``, ``\\u202e``), capped at MAX_PATH."""
    text = path
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if pairs:
            shown = "&".join(
                f"{quote(k, safe='')}={REDACTED if _secret_value(k, v) else quote(v, safe='/:,')}"
                for k, v in pairs
            )
        else:
            shown = REDACTED if _TOKEN_SHAPED.search(query) else query
        text = f"{path}?{shown}"
    if not (text.isascii() and text.isprintable()):
        text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= MAX_PATH else text[:MAX_PATH] + "..."


@dataclass(frozen=True, slots=True)
class Row:
    at: float
    host: str
    method: str
    path: str  # already shown_path()
    status: int
    ms: float
    bytes_in: int  # visitor → backend
    bytes_out: int  # backend → visitor
    visitor: str  # a user name, link:LABEL or public
    client: str

    def doc(self) -> dict[str, object]:
        return {
            "at": round(self.at, 3), "host": self.host, "method": self.method, "path": self.path,
            "status": self.status, "ms": round(self.ms, 1), "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out, "visitor": self.visitor, "client": self.client,
        }  # fmt: skip


def size(n: int) -> str:
    """``512B``, ``3.1KB``, ``2.0MB`` (the access-line style of ``python -m http.server`` users know)."""
    if n < 1000:
        return f"{n}B"
    if n < 1_000_000:
        return f"{n / 1000:.1f}KB"
    return f"{n / 1_000_000:.1f}MB"


class _Clock:
    """``HH:MM:SS`` of the second last asked: the lines of one second format the time once."""

    second = -1
    text = ""


def _hms(at: float) -> str:
    second = int(at)
    if _Clock.second != second:
        _Clock.second, _Clock.text = second, time.strftime("%H:%M:%S", time.gmtime(second))
    return _Clock.text


def line(row: Row, *, with_host: bool = False) -> str:
    """``12:03:04 GET /lab/api/contents 200 12ms 3.1KB alice`` (UTC)."""
    when = _hms(row.at)
    host = f" {row.host}" if with_host else ""
    method = row.method if row.method.isascii() and row.method.isprintable() else "?"
    took, sent = f"{row.ms:.0f}ms", size(row.bytes_out)
    return f"{when}{host} {method[:16]} {row.path} {row.status} {took} {sent} {row.visitor}"


Watcher = Callable[[Row], None]


class Inspector:
    def __init__(self, *, rows_per_tunnel: int = 500, max_tunnels: int = 1000) -> None:
        self._rows_per_tunnel = rows_per_tunnel
        self._max_tunnels = max_tunnels
        self._rows: OrderedDict[str, deque[Row]] = OrderedDict()
        #: key -> (which hosts it wants, the watcher); few (people watching), scanned per row.
        self._watchers: dict[int, tuple[Callable[[str], bool], Watcher]] = {}
        self._ids = itertools.count()

    def add(self, row: Row) -> None:
        rows = self._rows.get(row.host)
        if rows is None:
            rows = self._rows[row.host] = deque(maxlen=self._rows_per_tunnel)
            while len(self._rows) > self._max_tunnels:
                self._rows.popitem(last=False)
        else:
            self._rows.move_to_end(row.host)
        rows.append(row)
        if self._watchers:
            for wants, watcher in list(self._watchers.values()):
                try:
                    if wants(row.host):
                        watcher(row)
                except Exception:  # one watcher's bug must not fail the request that is being logged
                    log.exception("inspector watcher failed")

    def recent(self, host: str, limit: int = 500) -> list[Row]:
        rows = self._rows.get(host)
        return list(rows)[-limit:] if rows else []

    def forget(self, host: str) -> None:
        """A released name's rows go with it."""
        self._rows.pop(host, None)

    def watch(self, wants: Callable[[str], bool], watcher: Watcher) -> Callable[[], None]:
        """Call ``watcher`` with each new row of a host ``wants`` (asked per row, so a connection's
        tunnels may come and go); returns the call that stops it. Watchers must not block: they
        write into a bounded buffer and drop when it is full."""
        key = next(self._ids)
        self._watchers[key] = (wants, watcher)
        return lambda: self._watchers.pop(key, None) and None

    def __len__(self) -> int:
        """Tunnels with rows kept."""
        return len(self._rows)
