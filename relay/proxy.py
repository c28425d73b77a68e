"""The HTTP front: one coroutine per visitor connection, routing and checking auth per request.

The hot path parses each request head (routing and auth are per request), writes a rewritten head
into an SSH channel and streams the body bytes as they are; it parses the response head for its
framing and streams the rest (DESIGN §5: re-serialising whole messages costs 2.5× in req/s). The
channel of the previous request is kept for the next request on the same connection to the same
tunnel, since opening one costs a round trip to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from . import auth
from .admission import Gate, Refusal
from .config import PublicUrl
from .deadline import Deadline
from .errors import BadGateway, RelayError, ServiceUnavailable, TooManyRequests, Unauthorized
from .http1 import (
    Framing,
    RequestHead,
    ResponseHead,
    connection_tokens,
    get_one,
    parse_request_head,
    parse_response_head,
    response_framing,
    serialise_request,
    serialise_response,
)
from .limits import BUSY_RETRY_AFTER, Limits
from .logfmt import emit
from .portal import Portal, Reply, query_params, reason, without_param
from .protocol import HEALTH_PATH, MAX_FORM_BYTES, RELAY_PATH_PREFIX, TLS_ASK_PATH, TOKEN_HEADER, TOKEN_QUERY
from .pump import Truncated, copy_chunked, copy_exact, copy_until_eof, pipe
from .rewrite import (
    IPNetwork,
    client_address,
    downstream_headers,
    is_trusted,
    request_scheme,
    upstream_headers,
)
from .store import STORE_ERRORS, Store
from .tunnels import Registry, Stream, Tunnel

log = logging.getLogger(__name__)
access_log = logging.getLogger("relay.access")

#: Response bodies up to this size are read whole and sent with their head in one write (most
#: responses of an app are small; a second send() per response costs more than the copy).
SMALL_BODY = 16 * 1024


class _Abort(Exception):
    """Stop serving this visitor connection (already answered, or nothing sensible to answer)."""


@dataclass(eq=False)
class _Conn:
    """State of one visitor connection."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    peer_ip: str
    scheme: str
    idle: tuple[Tunnel, Stream] | None = None  # channel kept from the previous request
    busy: bool = field(default=False)
    note: str | None = None  # why the current request was refused or failed, for its one log line

    def take_idle(self, tunnel: Tunnel) -> Stream | None:
        if self.idle is None:
            return None
        idle_tunnel, stream = self.idle
        self.idle = None
        idle_tunnel.unpark(stream)
        if (
            idle_tunnel is tunnel
            and not tunnel.closed
            and not stream.reader.at_eof()
            and not stream.writer.is_closing()
        ):
            return stream
        stream.close()
        return None

    def drop_idle(self) -> None:
        if self.idle is not None:
            self.idle[1].close()
            self.idle = None

    def keep_idle(self, tunnel: Tunnel, stream: Stream) -> None:
        self.drop_idle()
        self.idle = (tunnel, stream)
        tunnel.park(stream)  # the tunnel may close it to make room under its channel cap


class Proxy:
    """Serves visitor connections. Shares only the registry with the SSH side."""

    def __init__(
        self,
        *,
        registry: Registry,
        store: Store,
        portal: Portal,
        public: PublicUrl,
        trust_proxy: tuple[IPNetwork, ...],
        limits: Limits | None = None,
    ) -> None:
        self.limits = limits = limits or Limits()
        self.gate = Gate(limits.http_max_connections, limits.http_max_connections_per_address)
        self.registry = registry
        self.store = store
        self.portal = portal
        self.public = public
        self.trust_proxy = trust_proxy
        self._conns: set[_Conn] = set()
        self.draining = False

    # -- connection loop -----------------------------------------------------------------------

    async def serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, scheme: str = "http"
    ) -> None:
        peer = writer.get_extra_info("peername")
        peer_ip = peer[0] if peer else "unknown"
        refusal = self.gate.enter(peer_ip, exempt_per_address=is_trusted(peer_ip, self.trust_proxy))
        if refusal is not None:
            await self._refuse_connection(writer, peer_ip, refusal)
            return
        conn = _Conn(reader, writer, peer_ip, scheme)
        self._conns.add(conn)
        try:
            first = True
            while not self.draining:
                head = await self._read_head(conn, first)
                first = False
                if head is None:
                    break
                conn.busy = True
                try:
                    keep = await self._one_request(conn, head)
                finally:
                    conn.busy = False
                if not keep:
                    break
        except (_Abort, ConnectionError, asyncio.IncompleteReadError, Truncated):
            pass
        except Exception:
            log.exception("visitor connection from %s failed", conn.peer_ip)
        finally:
            self._conns.discard(conn)
            self.gate.leave(peer_ip)
            conn.drop_idle()
            with contextlib.suppress(Exception):
                writer.close()

    async def _refuse_connection(self, writer: asyncio.StreamWriter, peer_ip: str, refusal: Refusal) -> None:
        """Past a connection cap: a fast answer without reading the request, then close."""
        if refusal is Refusal.TOTAL:
            reply = Reply.error(503, "the relay is at its connection limit; retry shortly", html=False)
        else:
            reply = Reply.error(429, "too many connections from your address", html=False)
        reply.headers.append(("Retry-After", str(BUSY_RETRY_AFTER)))
        emit(log, logging.WARNING, "http.refused", client=peer_ip, cap=refusal.value, status=reply.status)
        headers = [*reply.headers, ("Content-Length", str(len(reply.body))), ("Connection", "close")]
        writer.write(
            serialise_response(ResponseHead((1, 1), reply.status, reason(reply.status), []), headers)
        )
        writer.write(reply.body)
        with contextlib.suppress(Exception):
            async with Deadline(self.limits.http_head_timeout):
                await writer.drain()
        writer.close()

    async def _read_head(self, conn: _Conn, first: bool) -> RequestHead | None:
        lim = self.limits
        try:
            # A new connection has http_head_timeout for its whole first head; between keep-alive
            # requests the wait for the next one's first byte is http_keepalive_timeout, then the
            # rest of that head must follow within http_head_timeout (no slow drip of a head).
            async with Deadline(lim.http_head_timeout if first else lim.http_keepalive_timeout) as due:
                lead = b""
                if not first:
                    lead = await conn.reader.readexactly(1)
                    due.extend(lim.http_head_timeout)
                raw = lead + await conn.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, TimeoutError, asyncio.TimeoutError, ConnectionError):
            return None
        except asyncio.LimitOverrunError:
            await self._send(conn, Reply.error(431, "request head too large", html=False), keep=False)
            return None
        if len(raw) > lim.http_max_head_bytes:
            await self._send(conn, Reply.error(431, "request head too large", html=False), keep=False)
            return None
        try:
            return parse_request_head(raw, max_headers=lim.http_max_headers)
        except RelayError as exc:
            await self._send(conn, Reply.error(exc.status, str(exc), html=False), keep=False)
            return None

    async def _send(self, conn: _Conn, reply: Reply, *, keep: bool, head_only: bool = False) -> None:
        headers = [*reply.headers, ("Content-Length", str(len(reply.body)))]
        if not keep:
            headers.append(("Connection", "close"))
        data = serialise_response(ResponseHead((1, 1), reply.status, reason(reply.status), []), headers)
        conn.writer.write(data if head_only else data + reply.body)
        await conn.writer.drain()

    # -- one request -----------------------------------------------------------------------------

    async def _one_request(self, conn: _Conn, head: RequestHead) -> bool:
        started = time.monotonic()
        client = client_address(conn.peer_ip, head.headers, self.trust_proxy)
        status, sent = 0, 0
        conn.note = None
        try:
            status, sent, keep = await self._route(conn, head, client)
            return keep
        except STORE_ERRORS as exc:
            # Only the auth steps before forwarding touch the store, so nothing was sent yet.
            conn.note = f"store unavailable: {exc}"
            reply = Reply.error(503, "the relay's store is unavailable; try again shortly", html=False)
            status, sent = reply.status, len(reply.body)
            await self._send(conn, reply, keep=False)
            return False
        except _Abort as exc:
            conn.note = str(exc)
            raise
        except (ConnectionError, asyncio.IncompleteReadError, Truncated):
            conn.note = "visitor connection lost"
            raise
        finally:
            # The one line for this request. The path has no query (tokens may be there); cookies,
            # the relay header and tokens are never logged; logfmt escapes and caps what is.
            failed = status >= 500 or (status == 0 and conn.note is not None)
            emit(
                access_log,
                logging.WARNING if failed else logging.INFO,
                "http.request",
                client=client,
                host=head.host,
                method=head.method,
                path=head.path,
                status=status,
                bytes=sent,
                ms=f"{(time.monotonic() - started) * 1000:.1f}",
                note=conn.note,
            )

    async def _answer(
        self, conn: _Conn, head: RequestHead, reply: Reply, *, close: bool = False
    ) -> tuple[int, int, bool]:
        # A request body the relay did not read would desynchronise the connection: close it.
        keep = not close and head.keep_alive and head.framing is Framing.NONE and not self.draining
        await self._send(conn, reply, keep=keep, head_only=head.method == "HEAD")
        return reply.status, len(reply.body), keep

    async def _route(self, conn: _Conn, head: RequestHead, client: str) -> tuple[int, int, bool]:
        html = auth.wants_html(get_one(head.headers, "accept") or "")
        if head.path in (TLS_ASK_PATH, HEALTH_PATH) and not self.portal.is_served_host(head.host):
            # Caddy and health checks call the relay at its own address (any Host but a tunnel's),
            # over plain HTTP.
            reply = (
                self.portal.tls_ask(head) if head.path == TLS_ASK_PATH else Reply.json(200, {"status": "ok"})
            )
            return await self._answer(conn, head, reply)
        if (
            self.public.secure
            and head.path != HEALTH_PATH
            and request_scheme(conn.scheme, conn.peer_ip, head.headers, self.trust_proxy) != "https"
        ):
            # Under HTTPS, plain HTTP never carries credentials: no cookie is read or set on it.
            return await self._answer(conn, head, self._to_https(head, html))
        if head.host == self.public.domain:
            body = b""
            if head.method == "POST" and head.path.startswith(RELAY_PATH_PREFIX):
                if head.framing is Framing.CHUNKED:
                    return await self._answer(
                        conn, head, Reply.error(411, "Content-Length required", html=html)
                    )
                if head.length > MAX_FORM_BYTES:
                    return await self._answer(conn, head, Reply.error(413, "form too large", html=html))
                if head.framing is Framing.LENGTH:
                    async with Deadline(self.limits.http_body_idle_timeout):
                        body = await conn.reader.readexactly(head.length)
                    head.framing = Framing.NONE  # consumed
            return await self._answer(conn, head, self.portal.relay_host(head, body, client))

        tunnel = self.registry.get(head.host)
        if tunnel is None:
            return await self._answer(conn, head, self._no_tunnel(head.host, html))
        if head.path.startswith(RELAY_PATH_PREFIX):
            return await self._answer(conn, head, self.portal.tunnel_relay_path(head))

        try:
            # Decoded names, so that relay%5Ftoken= is recognised too and never reaches the backend.
            # Parsed only when the name could be there, literally or percent-encoded (hot path).
            maybe_token = TOKEN_QUERY in head.query or "%" in head.query
            query_token = query_params(head.query).get(TOKEN_QUERY) if maybe_token else None
            if query_token is not None:
                if head.method not in ("GET", "HEAD"):
                    raise Unauthorized(f"?{TOKEN_QUERY}= works on GET links only; send X-Relay-Token")
                reply = self.portal.exchange_query_token(head, query_token, client, tunnel.user_id)
                return await self._answer(conn, head, reply)
            user_id = self._identify(head, client)
        except (TooManyRequests, Unauthorized) as exc:
            conn.note = str(exc)
            return await self._answer(conn, head, self.portal.refusal(exc, html=html))

        tunnel_origin = self.public.origin(head.host)
        verdict = auth.decide(
            auth.AccessRequest(
                method=head.method,
                is_upgrade=head.is_upgrade,
                origin=get_one(head.headers, "origin"),
                accept=get_one(head.headers, "accept") or "",
                tunnel_origin=tunnel_origin,
                user_id=user_id,
            ),
            owner_id=tunnel.user_id,
        )
        if verdict is not auth.Verdict.ALLOW:
            conn.note = verdict.value
            return await self._answer(conn, head, self._refuse(verdict, tunnel_origin + head.target, html))
        return await self._forward(conn, head, tunnel, html)

    def _identify(self, head: RequestHead, client: str) -> int | None:
        """The user behind the request's relay credential (header first, then session cookie)."""
        token = get_one(head.headers, TOKEN_HEADER)
        if token is not None:
            user = self.portal.verify_token(token.strip(), client)
            if user is None:
                raise Unauthorized("invalid X-Relay-Token")
            return user.id
        user = self.portal.session_user(head.headers, head.host)
        return user.id if user else None

    def _refuse(self, verdict: auth.Verdict, url: str, html: bool) -> Reply:
        if verdict is auth.Verdict.LOGIN:
            return Reply.redirect(302, self.portal.login_url(url))
        if verdict is auth.Verdict.UNAUTHORIZED:
            return Reply.json(
                401,
                {
                    "error": "relay credential required: send X-Relay-Token or sign in",
                    "status": 401,
                    "login": self.portal.login_url(url),
                },
            )
        if verdict is auth.Verdict.BAD_ORIGIN:
            return Reply.error(403, "cross-origin request refused", html=html)
        return Reply.error(403, "your relay user may not open this tunnel", html=html)

    def _no_tunnel(self, host: str, html: bool) -> Reply:
        if host != self.public.domain and self.portal.serves(host):
            return Reply.error(502, f"the tunnel {host} is offline: its client is not connected", html=html)
        return Reply.error(404, f"no tunnel at {host}", html=html)

    def _to_https(self, head: RequestHead, html: bool) -> Reply:
        """A plain-HTTP request when the relay is served over HTTPS: the same URL over HTTPS, minus any
        ``relay_token`` (it was sent in the clear: make the visitor sign in instead of reusing it)."""
        host = head.host
        if host != self.public.domain and not self.portal.is_served_host(host):
            return Reply.error(404, f"no tunnel at {host}", html=html)
        query = without_param(head.query, TOKEN_QUERY) if TOKEN_QUERY in head.query else head.query
        location = self.public.origin(host) + head.path + (f"?{query}" if query else "")
        return Reply.redirect(308, location)

    # -- forwarding --------------------------------------------------------------------------------

    async def _open(self, tunnel: Tunnel) -> Stream:
        try:
            async with Deadline(self.limits.upstream_open_timeout):
                return await tunnel.open_stream()
        except ServiceUnavailable:
            raise
        except (TimeoutError, asyncio.TimeoutError):
            raise BadGateway("the tunnel's client did not open a channel in time") from None
        except Exception as exc:
            raise BadGateway(
                f"the tunnel's client refused the connection: {exc}; is the app running on the client's side?"
            ) from None

    async def _forward(
        self, conn: _Conn, head: RequestHead, tunnel: Tunnel, html: bool
    ) -> tuple[int, int, bool]:
        stream = conn.take_idle(tunnel)
        if stream is None:
            try:
                stream = await self._open(tunnel)
            except ServiceUnavailable as exc:
                conn.note = "channel cap"
                reply = Reply.error(503, str(exc), html=html, headers=[("Retry-After", str(exc.retry_after))])
                return await self._answer(conn, head, reply)
            except BadGateway as exc:
                conn.note = str(exc)
                return await self._answer(conn, head, Reply.error(502, str(exc), html=html))
        request_bytes = serialise_request(
            head,
            upstream_headers(
                head.headers, peer_ip=conn.peer_ip, scheme=conn.scheme, trusted=self.trust_proxy
            ),
        )
        stream.writer.write(request_bytes)
        tunnel.bytes_in += len(request_bytes)
        body_task: asyncio.Task[int] | None = None
        idle = self.limits.http_body_idle_timeout
        if head.framing is Framing.LENGTH:
            body_task = asyncio.ensure_future(copy_exact(conn.reader, stream.writer, head.length, idle=idle))
        elif head.framing is Framing.CHUNKED:
            body_task = asyncio.ensure_future(copy_chunked(conn.reader, stream.writer, idle=idle))
        try:
            return await self._relay_response(conn, head, tunnel, stream, body_task, html)
        except BaseException:
            stream.close()
            raise
        finally:
            if body_task is not None and not body_task.done():
                body_task.cancel()
                with contextlib.suppress(BaseException):
                    await body_task

    async def _read_response_head(self, stream: Stream, body_task: asyncio.Task[int] | None) -> bytes:
        """The next response head; fails fast if the visitor's body upload breaks meanwhile."""
        if body_task is None:
            # The common case (no request body): one read under a deadline, no extra task.
            try:
                async with Deadline(self.limits.upstream_response_timeout):
                    return await stream.reader.readuntil(b"\r\n\r\n")
            except (TimeoutError, asyncio.TimeoutError):
                raise RelayError("the backend did not answer in time", status=504) from None
        head_task = asyncio.ensure_future(stream.reader.readuntil(b"\r\n\r\n"))
        waiting: set[asyncio.Future[object]] = {head_task}  # type: ignore[arg-type]
        if body_task is not None and not body_task.done():
            waiting.add(body_task)  # type: ignore[arg-type]
        try:
            while True:
                done, _ = await asyncio.wait(
                    waiting,
                    timeout=self.limits.upstream_response_timeout,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not done:
                    raise RelayError("the backend did not answer in time", status=504)
                if head_task in done:
                    return head_task.result()
                # The body finished (or failed) first: keep waiting for the head only.
                assert body_task is not None
                if body_task.exception() is not None:
                    raise _Abort("visitor body upload failed")
                waiting.discard(body_task)
        finally:
            if not head_task.done():
                head_task.cancel()
                with contextlib.suppress(BaseException):
                    await head_task

    async def _relay_response(
        self,
        conn: _Conn,
        head: RequestHead,
        tunnel: Tunnel,
        stream: Stream,
        body_task: asyncio.Task[int] | None,
        html: bool,
    ) -> tuple[int, int, bool]:
        writer = conn.writer
        while True:
            try:
                raw = await self._read_response_head(stream, body_task)
                if len(raw) > self.limits.http_max_head_bytes:
                    raise BadGateway("backend response head too large")
                resp = parse_response_head(raw, max_headers=self.limits.http_max_headers)
                framing, length = response_framing(resp, head.method)
            except asyncio.IncompleteReadError as exc:
                # asyncssh also ends a readuntil this way when its buffer (the SSH window) fills
                # without a head end: a head that large is as broken as none.
                stream.close()
                why = "sent an oversized response head" if exc.partial else "closed the connection"
                conn.note = f"backend {why}"
                reply = Reply.error(502, f"the backend {why} without answering", html=html)
                return await self._answer(conn, head, reply, close=True)
            except RelayError as exc:
                # The channel is out of step (or its backend is broken): never reused.
                stream.close()
                conn.note = str(exc)
                reply = Reply.error(exc.status, str(exc), html=html)
                return await self._answer(conn, head, reply, close=True)
            except (_Abort, asyncio.CancelledError):
                raise
            except Exception as exc:
                # The tunnel's SSH connection dropped under the channel (the client was killed or
                # restarted). Its library's error types stay on its side of the seam; nothing was
                # sent to the visitor yet, so this is a plain 502, never a retry elsewhere.
                stream.close()
                conn.note = f"tunnel link lost: {type(exc).__name__}"
                reply = Reply.error(502, "the tunnel's client disconnected during the request", html=html)
                return await self._answer(conn, head, reply, close=True)
            if resp.status == 101 and head.is_upgrade:
                return await self._upgrade(conn, resp, tunnel, stream)
            if resp.status >= 200:
                break
            if head.version >= (1, 1):  # 100 Continue, 103 Early Hints: pass them on
                writer.write(serialise_response(resp, downstream_headers(resp.headers, self.public.domain)))
                await writer.drain()

        keep = head.keep_alive and resp.keep_alive and framing is not Framing.CLOSE and not self.draining
        out_headers = downstream_headers(resp.headers, self.public.domain)
        if not keep and "close" not in connection_tokens(out_headers):
            out_headers = [(k, v) for k, v in out_headers if k.lower() != "connection"]
            out_headers.append(("Connection", "close"))
        out = serialise_response(resp, out_headers)
        sent = len(out)
        idle = self.limits.stream_idle_timeout
        try:
            if framing is Framing.LENGTH and length <= SMALL_BODY:
                # A small body goes out with its head in one write: one send() per response.
                try:
                    async with Deadline(idle):
                        body = await stream.reader.readexactly(length)
                except (asyncio.IncompleteReadError, TimeoutError, asyncio.TimeoutError) as exc:
                    # Nothing reached the visitor yet: say what happened instead of a short 200.
                    stream.close()
                    sent = 0
                    stalled = not isinstance(exc, asyncio.IncompleteReadError)
                    conn.note = "backend body stalled" if stalled else "backend body truncated"
                    why = "stopped sending its response" if stalled else "cut its response short"
                    reply = Reply.error(504 if stalled else 502, f"the backend {why}", html=html)
                    return await self._answer(conn, head, reply, close=True)
                writer.write(out + body)
                sent += length
                async with Deadline(idle):
                    await writer.drain()
            elif framing is Framing.LENGTH:
                writer.write(out)
                sent += await copy_exact(stream.reader, writer, length, idle=idle)
            elif framing is Framing.CHUNKED:
                writer.write(out)
                sent += await copy_chunked(stream.reader, writer, idle=idle)
            elif framing is Framing.CLOSE:
                writer.write(out)
                sent += await copy_until_eof(stream.reader, writer, idle=idle)
            else:
                writer.write(out)
                async with Deadline(idle):
                    await writer.drain()
        except (Truncated, TimeoutError, asyncio.TimeoutError):
            # Never pretend a cut or stalled body is complete: the visitor sees the connection close.
            stream.close()
            raise _Abort("backend body truncated or stalled") from None
        except ConnectionError:
            stream.close()
            raise _Abort("visitor connection lost during the response") from None
        except Exception as exc:  # the tunnel's link dropped mid-body (see above)
            stream.close()
            raise _Abort(f"tunnel link lost mid-body: {type(exc).__name__}") from None
        finally:
            tunnel.bytes_out += sent
        if body_task is not None:
            if not body_task.done():
                # Answered before the upload finished: the channel and the connection are out of step.
                stream.close()
                return resp.status, sent, False
            if body_task.exception() is not None:
                stream.close()
                return resp.status, sent, False
            tunnel.bytes_in += body_task.result()
        if keep:
            conn.keep_idle(tunnel, stream)
        else:
            stream.close()
        return resp.status, sent, keep

    async def _upgrade(
        self, conn: _Conn, resp: ResponseHead, tunnel: Tunnel, stream: Stream
    ) -> tuple[int, int, bool]:
        out = serialise_response(resp, downstream_headers(resp.headers, self.public.domain))
        conn.writer.write(out)
        await conn.writer.drain()
        conn.busy = False  # a WebSocket may idle for days; shutdown need not wait for it
        try:
            to_backend, to_visitor = await pipe(
                (conn.reader, conn.writer),
                (stream.reader, stream.writer),
                stall=self.limits.stream_idle_timeout,
            )
        finally:
            stream.close()
        tunnel.bytes_in += to_backend
        tunnel.bytes_out += to_visitor + len(out)
        return 101, len(out) + to_visitor, False

    # -- shutdown ----------------------------------------------------------------------------------

    async def drain(self, grace: float) -> None:
        """Stop taking new requests; wait up to ``grace`` seconds for those in flight; close the rest."""
        self.draining = True
        for conn in list(self._conns):
            if not conn.busy:
                conn.writer.close()
        deadline = time.monotonic() + grace
        # Polling is enough here: it runs once, at shutdown, for at most ``grace`` seconds.
        while any(c.busy for c in self._conns) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for conn in list(self._conns):
            conn.writer.close()
