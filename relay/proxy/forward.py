"""One request out through a tunnel channel and its response back to the visitor.

The request head is rewritten and written into the channel; bodies stream as bytes with backpressure;
the response head is parsed for its framing and the rest streams as it comes (DESIGN §5:
re-serialising whole messages costs 2.5× in req/s). This module owns the channel for the length of
the request: it is parked on the visitor connection for the next request when the response ended
exactly at its framing, and closed in every other case — in one place, :meth:`Forwarder.forward`.

Failures before anything reached the visitor raise :class:`UpstreamFailed` (or the open errors of
the seam), which the visitor edge answers; failures after that raise :class:`Abort`: the visitor
sees its connection close, never a short body presented as complete.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from ..deadline import Deadline
from ..errors import BadGateway, RelayError
from ..http1 import (
    Framing,
    RequestHead,
    ResponseHead,
    get_one,
    parse_response_head,
    response_framing,
    serialise_request,
    serialise_response,
)
from ..limits import Limits
from ..pump import Truncated, copy_chunked, copy_exact, copy_until_eof
from ..readbuffer import ReadBuffer
from ..rewrite import IPNetwork, downstream_headers, upstream_headers
from ..tunnels import Metered, Stream, Tunnel, TunnelLost
from .splice import End, Splice
from .upgrades import OpenUpgrades

if TYPE_CHECKING:
    from .visitor import Visitor

#: Response bodies up to this size are read whole and sent with their head in one write (most
#: responses of an app are small; a second send() per response costs more than the copy).
SMALL_BODY = 16 * 1024
#: After one direction of an upgraded connection ends, the other has this long to finish.
LINGER = 30.0


def _event_stream(resp: ResponseHead) -> bool:
    return (get_one(resp.headers, "content-type") or "").startswith("text/event-stream")


class Abort(Exception):
    """Stop serving this visitor connection (already answered, or nothing sensible to answer)."""


class UpstreamFailed(RelayError):
    """The channel failed before anything was sent to the visitor: answer ``status`` and close the
    visitor connection (a request body may be left unread)."""


@dataclass
class Outcome:
    status: int
    sent: int  # bytes to the visitor
    keep: bool  # the visitor connection may carry another request
    upstream: int = 0  # bytes to the backend (head and body)


class Forwarder:
    def __init__(
        self,
        *,
        limits: Limits,
        relay_domain: str,
        trust_proxy: tuple[IPNetwork, ...],
        upgrades: OpenUpgrades | None = None,
    ) -> None:
        self.limits = limits
        self.relay_domain = relay_domain
        self.trust_proxy = trust_proxy
        self.upgrades = upgrades if upgrades is not None else OpenUpgrades()

    async def forward(
        self,
        visitor: Visitor,
        head: RequestHead,
        tunnel: Tunnel,
        still_allowed: Callable[[], bool] = lambda: True,
        *,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Outcome:
        """``still_allowed``: the request's routing and auth run again, for a WebSocket's lifetime;
        ``extra``: headers the relay adds (the dashboard's identity)."""
        stream = visitor.take_idle(tunnel) or await self._open(tunnel)
        tunnel.requests += 1
        outcome: Outcome | None = None
        try:
            outcome = await self._exchange(visitor, head, tunnel, stream, still_allowed, extra)
            return outcome
        finally:
            if outcome is not None and outcome.keep and not visitor.draining and stream.clean():
                visitor.keep_idle(tunnel, stream)
            else:
                stream.close()

    async def _open(self, tunnel: Tunnel) -> Stream:
        try:
            async with Deadline(self.limits.upstream_open_timeout):  # rare: a new channel
                return await tunnel.open_stream()
        except (TimeoutError, asyncio.TimeoutError):
            raise BadGateway("the tunnel's client did not open a channel in time") from None

    async def _exchange(
        self,
        visitor: Visitor,
        head: RequestHead,
        tunnel: Tunnel,
        stream: Stream,
        still_allowed: Callable[[], bool],
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Outcome:
        headers = upstream_headers(
            head.headers, peer_ip=visitor.peer_ip, scheme=visitor.scheme, trusted=self.trust_proxy
        )
        headers.extend(extra)
        if head.version < (1, 1) and head.keep_alive:
            # HTTP/1.0 is persistent only when asked; Connection itself is hop-by-hop, so the
            # relay asks again for its own hop, and the channel and the visitor stay open.
            headers.append(("Connection", "keep-alive"))
        request = serialise_request(head, headers)
        try:
            stream.writer.write(request)
        except TunnelLost:  # the link dropped between the channel's last use and now
            raise UpstreamFailed("the tunnel's client disconnected during the request", status=502) from None
        tunnel.bytes_in += len(request)
        body: asyncio.Task[int] | None = None
        idle = self.limits.http_body_idle_timeout
        upload = Metered(stream.writer, tunnel.count_in)  # counted as it flows
        if head.framing is Framing.LENGTH:
            body = asyncio.ensure_future(copy_exact(visitor.reader, upload, head.length, idle=idle))
        elif head.framing is Framing.CHUNKED:
            body = asyncio.ensure_future(copy_chunked(visitor.reader, upload, idle=idle))
        try:
            resp, framing, length = await self._response_head(visitor, head, stream, body)
            if resp.status == 101:
                outcome = await self._upgrade(visitor, resp, tunnel, stream, still_allowed)
                outcome.upstream += len(request)
                return outcome
            outcome = await self._response(visitor, head, tunnel, stream, resp, framing, length)
            outcome.upstream = len(request)
            if body is not None:
                if not body.done() or body.exception() is not None:
                    # Answered before the upload finished (or it broke): channel and visitor
                    # connection are out of step.
                    outcome.keep = False
                else:
                    outcome.upstream += body.result()
            return outcome
        finally:
            if body is not None and not body.done():
                body.cancel()
                with contextlib.suppress(BaseException):
                    await body

    async def _response_head(
        self, visitor: Visitor, head: RequestHead, stream: Stream, body: asyncio.Task[int] | None
    ) -> tuple[ResponseHead, Framing, int]:
        """The final response head (1xx interim ones are passed on), or :class:`UpstreamFailed`."""
        lim = self.limits
        while True:
            try:
                raw = await self._read_head(visitor, stream, body)
                if len(raw) > lim.http_max_head_bytes:
                    raise BadGateway("backend response head too large")
                resp = parse_response_head(raw, max_headers=lim.http_max_headers)
                framing, length = response_framing(resp, head.method)
            except asyncio.IncompleteReadError as exc:
                # asyncssh also ends a readuntil this way when its buffer (the SSH window) fills
                # without a head end: a head that large is as broken as none.
                why = "sent an oversized response head" if exc.partial else "closed the connection"
                raise UpstreamFailed(f"the backend {why} without answering", status=502) from None
            except TunnelLost:
                # Nothing was sent to the visitor yet: a plain 502, never a retry elsewhere.
                raise UpstreamFailed(
                    "the tunnel's client disconnected during the request", status=502
                ) from None
            except UpstreamFailed:
                raise
            except RelayError as exc:  # a broken response head (BadGateway) or no answer in time (504)
                raise UpstreamFailed(str(exc), status=exc.status) from None
            if resp.status == 101:
                if head.is_upgrade:
                    return resp, framing, length
                # Switching protocols nobody asked for: what follows is not HTTP for this request.
                raise UpstreamFailed("the backend switched protocols without an upgrade request", status=502)
            if resp.status >= 200:
                return resp, framing, length
            if head.version >= (1, 1):  # 100 Continue, 103 Early Hints: pass them on
                visitor.send(serialise_response(resp, downstream_headers(resp.headers, self.relay_domain)))
                await visitor.writer.drain()

    async def _read_head(self, visitor: Visitor, stream: Stream, body: asyncio.Task[int] | None) -> bytes:
        """The next response head; fails fast if the visitor's body upload breaks meanwhile."""
        timeout = self.limits.upstream_response_timeout
        if body is None:
            # The common case (no request body): one read under a deadline, no extra task.
            try:
                async with visitor.deadline(timeout):
                    return await stream.reader.readuntil(b"\r\n\r\n")
            except (TimeoutError, asyncio.TimeoutError):
                raise RelayError("the backend did not answer in time", status=504) from None
        head_task = asyncio.ensure_future(stream.reader.readuntil(b"\r\n\r\n"))
        waiting: set[asyncio.Future[object]] = {head_task}  # type: ignore[arg-type]
        if not body.done():
            waiting.add(body)  # type: ignore[arg-type]
        try:
            while True:
                done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    raise RelayError("the backend did not answer in time", status=504)
                if head_task in done:
                    return head_task.result()
                if body.exception() is not None:  # the body finished (or failed) first
                    raise Abort("visitor body upload failed")
                waiting.discard(body)
        finally:
            if not head_task.done():
                head_task.cancel()
                with contextlib.suppress(BaseException):
                    await head_task

    async def _response(
        self,
        visitor: Visitor,
        head: RequestHead,
        tunnel: Tunnel,
        stream: Stream,
        resp: ResponseHead,
        framing: Framing,
        length: int,
    ) -> Outcome:
        keep = head.keep_alive and resp.keep_alive and framing is not Framing.CLOSE and not visitor.draining
        if framing is not Framing.LENGTH and _event_stream(resp):
            visitor.busy = False  # an event stream (the inspector's) may last hours, like a WebSocket
        out_headers = downstream_headers(resp.headers, self.relay_domain)  # no Connection of its own
        if not keep:
            out_headers.append(("Connection", "close"))
        elif head.version < (1, 1):
            out_headers.append(("Connection", "keep-alive"))  # an HTTP/1.0 visitor asked for it
        out = serialise_response(resp, out_headers)
        sent = len(out)
        writer, idle = Metered(visitor.writer, tunnel.count_out), self.limits.stream_idle_timeout
        try:
            if framing is Framing.LENGTH and length <= SMALL_BODY:
                visitor.send(out + await self._small_body(visitor, stream, length, idle))
                sent += length
                tunnel.bytes_out += sent
                await visitor.drained(idle)
            else:
                visitor.send(out)
                tunnel.bytes_out += sent  # the body is counted as it flows, through ``writer``
                if framing is Framing.LENGTH:
                    sent += await copy_exact(stream.reader, writer, length, idle=idle)
                elif framing is Framing.CHUNKED:
                    sent += await copy_chunked(stream.reader, writer, idle=idle)
                elif framing is Framing.CLOSE:
                    sent += await copy_until_eof(stream.reader, writer, idle=idle)
                else:
                    await visitor.drained(idle)
        except UpstreamFailed:
            sent = 0
            raise
        except (Truncated, TimeoutError, asyncio.TimeoutError):
            raise Abort("backend body truncated or stalled") from None
        except ConnectionError:
            raise Abort("visitor connection lost during the response") from None
        except TunnelLost:
            raise Abort("tunnel link lost mid-body") from None
        return Outcome(resp.status, sent, keep)

    @staticmethod
    async def _small_body(visitor: Visitor, stream: Stream, length: int, idle: float | None) -> bytes:
        try:
            async with visitor.deadline(idle):
                return await stream.reader.readexactly(length)
        except asyncio.IncompleteReadError:
            # Nothing reached the visitor yet: say what happened instead of a short 200.
            raise UpstreamFailed("the backend cut its response short", status=502) from None
        except (TimeoutError, asyncio.TimeoutError):
            raise UpstreamFailed("the backend stopped sending its response", status=504) from None
        except TunnelLost:
            raise UpstreamFailed("the tunnel's client disconnected during the request", status=502) from None

    async def _upgrade(
        self,
        visitor: Visitor,
        resp: ResponseHead,
        tunnel: Tunnel,
        stream: Stream,
        still_allowed: Callable[[], bool],
    ) -> Outcome:
        out = serialise_response(resp, downstream_headers(resp.headers, self.relay_domain, upgrade=True))
        visitor.send(out)
        tunnel.bytes_out += len(out)
        await visitor.writer.drain()
        visitor.busy = False  # a WebSocket may idle for days; shutdown need not wait for it

        def close() -> None:  # both ends, so neither half of the pipe lingers
            visitor.writer.transport.abort()
            stream.close()

        reader = stream.reader
        if not isinstance(reader, ReadBuffer):  # every opener's streams are (channels, the dashboard)
            raise TypeError(f"cannot splice a {type(reader).__name__}")
        splice = Splice(
            (visitor.stream, visitor.stream),
            (reader, cast(End, stream.writer)),
            count=(tunnel.count_in, tunnel.count_out),  # both ways counted as they flow
            linger=LINGER,
            stall=self.limits.stream_idle_timeout,
        )
        key = self.upgrades.add(still_allowed, close, tunnel.host)
        try:
            to_backend, to_visitor = await splice.run()
        finally:
            self.upgrades.discard(key)
        return Outcome(101, len(out) + to_visitor, False, to_backend)
