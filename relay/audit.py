"""The audit log (DESIGN §3.5): who opened what, who signed in, what changed.

Events go to the store's ``audit`` table. In the relay they are queued in memory and written in
batches by the store writer once a second, so recording one never delays a request; a full queue
drops new events and counts them (logged), it never grows without bound. ``relay audit`` and the
``audit`` SSH command read the table; :func:`may_read` says which events an owner sees.

An event never holds a secret: actors are user names, ``link:LABEL`` or ``public``; a user agent is
escaped and capped; failed sign-ins say where they came from, never what was sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import BadRequest
from .logfmt import emit, escape
from .store import AuditRow, Store, User
from .tunnels import Tunnel

log = logging.getLogger(__name__)

#: The actor of a request that needed no credential (a public host).
PUBLIC = "public"
#: The actor of a failed sign-in (the credential named nobody).
ANONYMOUS = "anonymous"
#: The actor of ``relay ...`` admin commands on the VPS.
ADMIN_CLI = "admin-cli"
#: Longest user agent kept, characters before escaping.
MAX_AGENT = 200


@dataclass(frozen=True)
class Event:
    event: str
    actor: str
    host: str = ""
    client: str = ""
    detail: dict[str, object] = field(default_factory=dict)
    owner_id: int | None = None  # the host's owner: they read the event
    user_id: int | None = None  # the account it is about: its user reads it
    at: float = field(default_factory=time.time)
    #: A visit through a share: its (kind, user id), so the share's uses are counted.
    use: tuple[str, int | None] | None = None

    def row(self) -> AuditRow:
        detail = json.dumps(self.detail, separators=(",", ":"))
        return AuditRow(
            self.at, self.event, self.actor, self.host, self.client, detail, self.owner_id, self.user_id
        )

    @classmethod
    def from_row(cls, row: AuditRow) -> Event:
        return cls(
            row.event,
            row.actor,
            row.host,
            row.client,
            json.loads(row.detail),
            row.owner_id,
            row.user_id,
            row.at,
        )


def may_read(*, owner_id: int | None, user_id: int | None, caller_id: int, admin: bool) -> bool:
    """An admin reads every event; a user, those of their own hosts and of their own account. A user
    a host is shared with reads nothing of that host (their visits there are the owner's events)."""
    return admin or caller_id in (owner_id, user_id)


def agent(value: str | None) -> str:
    """A user agent as the log keeps it: escaped (no control characters) and capped."""
    return escape(value or "", cap=MAX_AGENT).strip('"')


def event_doc(e: Event) -> dict[str, object]:
    return {
        "at": round(e.at, 3),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e.at)),
        "event": e.event,
        "actor": e.actor,
        "host": e.host,
        "client": e.client,
        "detail": e.detail,
    }


def event_line(e: Event) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.at))
    detail = " ".join(f"{k}={escape(v)}" for k, v in e.detail.items())
    return "\t".join([when, e.event, e.actor, e.host or "-", e.client or "-", detail]).rstrip()


def write_batch(store: Store, events: list[Event]) -> None:
    """One transaction for a batch of events and the share uses they count."""
    uses = [(e.host, e.use[0], e.use[1]) for e in events if e.use is not None]
    store.add_audit([e.row() for e in events], uses=uses)


class AuditLog:
    """The relay's queue of events, and the memory of which sessions already visited which host."""

    def __init__(
        self, submit: Callable[[list[Event]], None], *, max_pending: int = 10_000, max_seen: int = 50_000
    ) -> None:
        self._submit = submit
        self._pending: list[Event] = []
        self._max_pending = max_pending
        self.dropped = 0
        #: (host, session key) -> None, oldest first: a visit is recorded once per session and host.
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._max_seen = max_seen
        self._live: dict[str, Tunnel] = {}

    def record(self, event: Event) -> None:
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            return
        self._pending.append(event)

    def first_visit(self, host: str, key: str) -> bool:
        """Is this the first allowed request of session ``key`` (a session id, a token, a public
        visitor's address) on ``host``? Remembered in memory, bounded: one dict lookup per request."""
        seen = (host, key)
        if seen in self._seen:
            self._seen.move_to_end(seen)
            return False
        self._seen[seen] = None
        if len(self._seen) > self._max_seen:
            self._seen.popitem(last=False)
        return True

    def visit(
        self,
        *,
        host: str,
        actor: str,
        client: str,
        user_agent: str | None,
        owner_id: int,
        use: tuple[str, int | None] | None = None,
    ) -> None:
        """A visit event (call it when :meth:`first_visit` says so)."""
        detail: dict[str, object] = {"agent": agent(user_agent)}
        self.record(Event("visit", actor, host, client, detail, owner_id=owner_id, use=use))

    def on_registry_change(self, host: str, tunnel: Tunnel | None) -> None:
        """Tunnel open and close events (a displaced tunnel closes as its successor opens)."""
        old = self._live.pop(host, None)
        if old is not None:
            seconds = round(time.time() - old.since, 1)
            detail: dict[str, object] = {
                "seconds": seconds,
                "bytes_in": old.bytes_in,
                "bytes_out": old.bytes_out,
            }
            self.record(
                Event("tunnel_close", old.user_name, host, old.client, detail, old.user_id, old.user_id)
            )
        if tunnel is not None:
            self._live[host] = tunnel
            user, client = tunnel.user_name, tunnel.client
            self.record(Event("tunnel_open", user, host, client, {}, tunnel.user_id, tunnel.user_id))

    def flush(self) -> int:
        """Hand the queued events to the writer; returns how many."""
        if self.dropped:
            emit(log, logging.WARNING, "audit.dropped", events=self.dropped)
            self.dropped = 0
        batch, self._pending = self._pending, []
        if batch:
            self._submit(batch)
        return len(batch)

    async def run(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            self.flush()


#: Most events one ``audit`` call prints.
MAX_LIMIT = 10_000


def read(
    store: Store,
    *,
    reader: User | None,
    host: str | None = None,
    user: User | None = None,
    since: float = 0.0,
    limit: int = 100,
) -> list[Event]:
    """Events newest first: every event for ``reader`` None (the admin CLI), else only those
    :func:`may_read` lets ``reader`` see (the SQL selects them; the rule is checked again here)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"--limit must be between 1 and {MAX_LIMIT}")
    rows = store.list_audit(
        reader_id=reader.id if reader is not None else None, host=host, user=user, since=since, limit=limit
    )
    events = [Event.from_row(row) for row in rows]
    if reader is None:
        return events
    return [
        e
        for e in events
        if may_read(owner_id=e.owner_id, user_id=e.user_id, caller_id=reader.id, admin=False)
    ]
