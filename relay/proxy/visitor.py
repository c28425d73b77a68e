"""One visitor connection: its request loop, its kept channel, and the edge where a request's outcome
— a reply, a forwarded exchange, a typed error, a lost peer, or a bug — becomes bytes and one access line.

The channel of the previous request is kept for the next request on the same connection to the same
tunnel, since opening one costs a round trip to the client (DESIGN §2).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .. import inspector
from ..admission import Gate
from ..deadline import Deadline, Watchdog
from ..errors import BadRequest, RelayError
from ..http1 import Framing, RequestHead, parse_request_head
from ..inspector import Inspector
from ..limits import BUSY_RETRY_AFTER, Limits
from ..logfmt import emit, escape
from ..metrics import Meter
from ..protocol import SHARE_PATH
from ..pump import Truncated
from ..rewrite import IPNetwork, client_address
from ..store import STORE_ERRORS, Store
from ..storereads import RunReads, inline
from ..tunnels import Stream, Tunnel
from .forward import Abort, Forwarder, Outcome, UpstreamFailed
from .portal import Portal
from .reply import Reply
from .route import Answer, Forward, Router, SshWebSocket
from .ssh_bridge import SshBridge
from .visitor_stream import BareLF, HeadTooLarge, VisitorStream

log = logging.getLogger(__name__)
access_log = logging.getLogger("relay.access")


_REASONS = {401: "unauthorized", 403: "forbidden", 404: "not_found", 410: "link_ended", 429: "rate_limited"}


def refusal_reason(status: int, note: str | None) -> str:
    """A relay-answered refusal's reason, as ``relay_refusals_total{reason}`` counts it."""
    if note in ("login", "bad_origin", "tunnel offline"):
        return note.replace(" ", "_")
    if status in _REASONS:
        return _REASONS[status]
    return "busy" if status == 503 else "bad_request" if status < 500 else "error"


def shown_path(path: str) -> str:
    """A path as logs show it: a share link's code is a credential, so it is left out."""
    if path.startswith(SHARE_PATH + "/"):
        return SHARE_PATH + "/CODE"
    return path


async def _no_writes(writes: list[Callable[[Store], object]]) -> None:
    if writes:
        raise RuntimeError("this front has no store writer")


@dataclass(frozen=True)
class Front:
    """What every visitor connection shares: injected once by the proxy server."""

    limits: Limits
    router: Router
    portal: Portal
    forwarder: Forwarder
    trust_proxy: tuple[IPNetwork, ...]
    #: Requests in flight per forwarded client address (behind --trust-proxy every connection comes
    #: from the proxy, so the per-address connection caps count the visitor here instead).
    forwarded: Gate = field(default_factory=lambda: Gate(2**31, 2**31))
    #: Runs a reply's store writes (off the event loop, in the relay; inline in unit tests).
    commit: Callable[[list[Callable[[Store], object]]], Awaitable[None]] = field(default=_no_writes)
    #: Where forwarded requests are shown live (the dashboard, ``log HOST``, an SSH pty).
    inspector: Inspector | None = None
    #: Request and refusal counts for the metrics (None: metrics are off, nothing is counted).
    meter: Meter | None = None
    #: SSH over WebSocket on the relay host (None: /_relay/ssh answers 404).
    ssh_bridge: SshBridge | None = None
    #: Runs the relay host's pages, which read the store (off the loop on PostgreSQL).
    reads: RunReads = inline
    #: Runs routing: from the caches on the loop when they answer, else as ``reads`` does.
    route_reads: RunReads = inline


class Visitor:
    def __init__(
        self,
        front: Front,
        stream: VisitorStream,
        peer_ip: str,
        scheme: str,
    ) -> None:
        self.front = front
        #: The connection: the request loop reads it as ``reader`` and answers through ``writer``.
        self.reader = self.writer = self.stream = stream
        self.peer_ip = peer_ip
        self.scheme = scheme
        self.busy = False  # a request is in flight (shutdown waits for it)
        self.answering = False  # bytes of the current request's response were sent
        self.draining = False
        self._idle: tuple[Tunnel, Stream] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # set when serving starts
        self.task: asyncio.Task[Any] | None = None  # the task serving this connection
        self._watchdog: Watchdog | None = None  # its waits' one timer, while serving
        self.forwarded: Forward | None = None  # the current request's, once it is forwarded
        #: Carries an SSH connection (/_relay/ssh): shutdown leaves it to the SSH side to close.
        self.bridged = False

    def deadline(self, seconds: float | None) -> Deadline | Watchdog:
        """A deadline for a wait of this connection's own task: the connection's watchdog while it is
        served (no timer armed per wait), else a Deadline of its own."""
        if self._watchdog is not None:
            return self._watchdog(seconds)
        return Deadline(seconds, loop=self.loop, task=self.task)

    # -- the kept channel ----------------------------------------------------------------------

    def take_idle(self, tunnel: Tunnel) -> Stream | None:
        if self._idle is None:
            return None
        idle_tunnel, stream = self._idle
        self._idle = None
        idle_tunnel.unpark(stream)
        if idle_tunnel is tunnel and not tunnel.closed and stream.clean():
            return stream  # bytes that arrived while it idled would make it unclean
        stream.close()
        return None

    def keep_idle(self, tunnel: Tunnel, stream: Stream) -> None:
        self.drop_idle()
        self._idle = (tunnel, stream)
        tunnel.park(stream)  # the tunnel may close it to make room under its channel cap

    def drop_idle(self) -> None:
        if self._idle is not None:
            self._idle[1].close()
            self._idle = None

    def send(self, data: bytes) -> None:
        """Write response bytes of the current request (after this, an error can only close)."""
        self.answering = True
        if self.writer.transport.is_closing():
            # The visitor left. Writes skip drain() when the socket took everything (drained()), so
            # nothing else noticed; uvloop would raise RuntimeError for a write to a closed transport.
            raise ConnectionResetError("the visitor's connection is closed")
        self.writer.write(data)

    async def drained(self, idle: float | None) -> None:
        """Wait until the visitor took what was written, at most ``idle`` seconds without progress.

        Usually the socket took it all at once: then there is nothing to wait for, and no timer is set
        (a lost connection shows on the next read or write)."""
        if self.writer.transport.get_write_buffer_size():
            async with self.deadline(idle):
                await self.writer.drain()

    # -- the request loop ----------------------------------------------------------------------

    async def serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.task = task = asyncio.current_task(self.loop)
        assert task is not None
        dog = self._watchdog = Watchdog(self.loop, task, self.front.limits.shortest_wait)
        try:
            first = True
            while not self.draining:
                head = await self._read_head(first)
                first = False
                if head is None:
                    break
                self.busy = True
                try:
                    keep = await self._one_request(head)
                finally:
                    self.busy = False
                if not keep:
                    break
        except (Abort, ConnectionError, asyncio.IncompleteReadError, Truncated):
            pass
        except Exception:
            log.exception("visitor connection from %s failed", self.peer_ip)
        finally:
            dog.close()
            self._watchdog = None
            self.drop_idle()
            self.writer.close()

    async def _read_head(self, first: bool) -> RequestHead | None:
        lim = self.front.limits
        try:
            # A new connection has http_head_timeout for its whole first head; between keep-alive
            # requests the wait for the next one's first byte is http_keepalive_timeout, then the
            # rest of that head must follow within http_head_timeout (no slow drip of a head).
            async with self.deadline(lim.http_head_timeout if first else lim.http_keepalive_timeout) as due:
                if not first:
                    if not await self.stream.wait_for_data():
                        return None
                    due.extend(lim.http_head_timeout)
                raw = await self.stream.read_head()
        except (asyncio.IncompleteReadError, TimeoutError, asyncio.TimeoutError, ConnectionError):
            return None
        except HeadTooLarge:
            raw = b""
        except BareLF as exc:
            await self._refuse_head(exc.line, BadRequest("bare LF line end in request head"))
            return None
        if not raw or len(raw) > lim.http_max_head_bytes:
            await self._refuse_head(raw, RelayError("request head too large", status=431))
            return None
        try:
            return parse_request_head(raw, max_headers=lim.http_max_headers)
        except RelayError as exc:
            await self._refuse_head(raw, exc)
            return None

    async def _refuse_head(self, raw: bytes, exc: RelayError) -> None:
        """Answer a head that cannot be served, close, and log one line: method and path as the
        request line gave them (escaped and capped by logfmt), since nothing else of it is trusted."""
        method, _, rest = raw.partition(b"\r\n")[0].partition(b" ")
        path = rest.rpartition(b" ")[0].partition(b"?")[0] if b" " in rest else b""
        reply = Reply.error(exc.status, str(exc), html=False)
        emit(
            access_log,
            logging.INFO,
            "http.request",
            client=self.peer_ip,
            method=method[:16].decode("latin-1") or None,
            path=shown_path(path.decode("latin-1")) or None,
            status=reply.status,
            bytes=len(reply.body),
            note=str(exc),
        )
        await self._send(reply, keep=False)
        if self.front.meter is not None:
            self.front.meter.request(reply.status, 0.0)
            self.front.meter.refused("bad_request")

    async def _one_request(self, head: RequestHead) -> bool:
        """Serve one request; the edge where every outcome is answered and logged once."""
        started = time.monotonic()
        client = client_address(self.peer_ip, head.headers, self.front.trust_proxy)
        outcome, note = Outcome(0, 0, False), None
        self.answering = False
        self.forwarded = None
        forwarded = client != self.peer_ip  # a visitor behind a trusted proxy
        refusal = self.front.forwarded.enter(client) if forwarded else None
        try:
            if refusal is not None:
                note = f"{refusal.value} cap of requests in flight"
                reply = Reply.error(429, "too many requests in flight from your address", html=False)
                reply.headers.append(("Retry-After", str(BUSY_RETRY_AFTER)))
                outcome = await self._answer(head, reply)
                return outcome.keep
            outcome, note = await self._serve_request(head, client)
            return outcome.keep
        except STORE_ERRORS as exc:
            # Only the auth steps before forwarding touch the store, so nothing was sent yet.
            note = f"store unavailable: {exc}"
            reply = Reply.error(503, "the relay's store is unavailable; try again shortly", html=False)
            outcome = Outcome(reply.status, len(reply.body), False)
            await self._send(reply, keep=False)
            return False
        except Abort as exc:
            note = str(exc)
            raise
        except (ConnectionError, asyncio.IncompleteReadError, Truncated):
            note = "visitor connection lost"
            raise
        except Exception:
            # A bug: one traceback with the request's context; this connection alone ends, with a
            # 502 if nothing of the response was sent yet.
            note = "internal error"
            log.exception(  # the visitor's text escaped, as on the access line
                "request failed: client=%s host=%s %s %s",
                client,
                head.host,
                head.method,
                escape(shown_path(head.path)),
            )
            if not self.answering:
                reply = Reply.error(502, "the relay failed on this request; it was logged", html=False)
                outcome = Outcome(reply.status, len(reply.body), False)
                await self._send(reply, keep=False)
            raise Abort("internal error") from None
        finally:
            if forwarded and refusal is None:
                self.front.forwarded.leave(client)
            # The one line for this request. The path has no query (tokens may be there); cookies,
            # the relay header and tokens are never logged; logfmt escapes and caps what is.
            took = time.monotonic() - started  # once, for the access line, the inspector and metrics
            failed = outcome.status >= 500 or (outcome.status == 0 and note is not None)
            emit(
                access_log,
                logging.WARNING if failed else logging.INFO,
                "http.request",
                client=client,
                host=head.host,
                method=head.method,
                path=shown_path(head.path),
                status=outcome.status,
                bytes=outcome.sent,
                ms=f"{took * 1000:.1f}",
                note=note,
            )
            if self.forwarded is not None and self.forwarded.visitor and self.front.inspector is not None:
                self._inspect(head, outcome, client, took)
            if self.front.meter is not None:
                self._count(outcome.status, note, took)

    def _count(self, status: int, note: str | None, took: float) -> None:
        meter = self.front.meter
        assert meter is not None
        meter.request(status, took)
        if self.forwarded is None and (status >= 400 or note == "login"):
            meter.refused(refusal_reason(status, note))

    def _inspect(self, head: RequestHead, outcome: Outcome, client: str, took: float) -> None:
        assert self.forwarded is not None and self.front.inspector is not None
        ms = took * 1000
        path = inspector.shown_path(head.path, head.query)
        row = inspector.Row(
            time.time(), head.host, head.method, path, outcome.status, ms, outcome.upstream, outcome.sent,
            self.forwarded.visitor, client,
        )  # fmt: skip
        self.front.inspector.add(row)

    async def _serve_request(self, head: RequestHead, client: str) -> tuple[Outcome, str | None]:
        front = self.front
        route, scheme, peer_ip = front.router.route, self.scheme, self.peer_ip
        decision = await front.route_reads(lambda: route(head, scheme=scheme, peer_ip=peer_ip, client=client))
        if isinstance(decision, Answer):
            return await self._answer(head, decision.reply), decision.note
        if isinstance(decision, SshWebSocket):
            return await self._ssh_websocket(head, client)
        if isinstance(decision, Forward):
            html, self.forwarded = decision.html, decision
            try:
                tunnel = decision.tunnel
                if not head.is_upgrade:
                    return await front.forwarder.forward(self, head, tunnel, extra=decision.extra), None

                def still_allowed() -> bool:  # the same request, routed again (a WebSocket lives on)
                    again = front.router.route(head, scheme=self.scheme, peer_ip=self.peer_ip, client=client)
                    return isinstance(again, Forward) and again.tunnel is tunnel

                return await front.forwarder.forward(self, head, tunnel, still_allowed), None
            except UpstreamFailed as exc:
                return await self._answer(head, Reply.from_error(exc, html=html), close=True), str(exc)
            except RelayError as exc:  # the channel could not be opened (cap, refusal, timeout)
                return await self._answer(head, Reply.from_error(exc, html=html)), str(exc)
        body = b""
        if head.framing is Framing.LENGTH:  # a login form, its size checked by the router
            async with self.deadline(front.limits.http_body_idle_timeout):
                body = await self.reader.readexactly(head.length)
            head.framing = Framing.NONE  # consumed
        reply = await front.reads(lambda: front.portal.relay_host(head, body, client))
        return await self._answer(head, reply), None

    async def _ssh_websocket(self, head: RequestHead, client: str) -> tuple[Outcome, str | None]:
        bridge = self.front.ssh_bridge
        if bridge is None:
            return await self._answer(head, Reply.error(404, "no SSH over WebSocket here", html=False)), None
        refusal = bridge.refusal(head)
        if refusal is None and head.framing is not Framing.NONE:
            refusal = Reply.error(400, "a WebSocket handshake has no body", html=False)
        if refusal is not None:
            return await self._answer(head, refusal, close=True), "not a WebSocket handshake"
        return await bridge.serve(self, head, client), "ssh over websocket"

    async def _answer(self, head: RequestHead, reply: Reply, *, close: bool = False) -> Outcome:
        # A request body the relay did not read would desynchronise the connection: close it.
        keep = not close and head.keep_alive and head.framing is Framing.NONE and not self.draining
        if reply.writes:  # a session to record first; a store error becomes the 503 of the edge
            await self.front.commit(reply.writes)
        await self._send(reply, keep=keep, head_only=head.method == "HEAD")
        return Outcome(reply.status, len(reply.body), keep)

    async def _send(self, reply: Reply, *, keep: bool, head_only: bool = False) -> None:
        self.send(reply.encode(keep=keep, head_only=head_only))
        await self.writer.drain()
