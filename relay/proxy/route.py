"""What one request gets, decided in DESIGN §3.3's order and in one place: a probe answer, the relay
host's pages, an HTTPS redirect, or a tunnel — after its credential and the verdict of
:func:`relay.auth.decide`. Nothing here does I/O on the visitor's connection; the store is read for
credentials (its errors propagate: the visitor edge answers 503).

On PostgreSQL a route is tried first on the event loop from the store's caches, and done again in a
reader thread from the start if it needs a query (:meth:`relay.storereads.StoreReads.cached_first`).
So nothing here may change anything before its last store read: writes go back with the reply, and
failure counts and audit events come after the reads that decide them."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from .. import audit, auth, pages, sharing
from ..config import PublicUrl
from ..dashboard.rules import csrf_token
from ..errors import RelayError, Unauthorized
from ..http1 import Framing, RequestHead, get_one
from ..names import HostKind, classify_host
from ..protocol import (
    DASHBOARD_CLIENT_HEADER,
    DASHBOARD_CSRF_HEADER,
    DASHBOARD_PATH,
    DASHBOARD_SESSION_HEADER,
    DASHBOARD_USER_HEADER,
    HEALTH_PATH,
    LOGIN_PATH,
    MAX_FORM_BYTES,
    RELAY_PATH_PREFIX,
    SSH_WS_PATH,
    STATUS_PATH,
    TLS_ASK_PATH,
    TOKEN_QUERY,
)
from ..rewrite import IPNetwork, query_params, request_scheme, without_param
from ..store import Guest, Store, User
from ..tunnels import Registry, Tunnel
from .credentials import Credentials
from .portal import Portal
from .reply import Reply


@dataclass(frozen=True)
class Answer:
    """The relay answers itself; ``note`` says why on the access line (a refusal's reason)."""

    reply: Reply
    note: str | None = None


@dataclass(frozen=True)
class RelayHost:
    """A page of the relay's own host; a login form's body (at most ``MAX_FORM_BYTES``) is read first."""


@dataclass(frozen=True)
class Forward:
    """Allowed: forward the request to this tunnel (``html``: how to word an error reply, if one)."""

    tunnel: Tunnel
    html: bool
    visitor: str = ""  # who, for the inspector: a user name, link:LABEL or public ("": the dashboard)
    extra: tuple[tuple[str, str], ...] = ()  # headers the relay adds (the dashboard's identity)


@dataclass(frozen=True)
class SshWebSocket:
    """The relay host's ``/_relay/ssh``: an SSH connection over WebSocket (SSH authenticates it)."""


Decision = Answer | RelayHost | Forward | SshWebSocket


def visitor_of(
    user: User | None, *, owner_id: int, shared: frozenset[int], guest: Guest | None
) -> tuple[str, tuple[str, int | None] | None]:
    """Who an allowed visitor is, as the audit log and the inspector name them — the owner, a user the
    host is shared with, a link's guest, or (a public host) anyone — and the share they came through
    (kind, user id), if any, whose uses count them."""
    if user is not None and user.id == owner_id:
        return user.name, None
    if user is not None and user.id in shared:
        return user.name, ("user", user.id)
    if guest is not None:
        return sharing.link_actor(guest.label, guest.share_id), None
    return user.name if user is not None else audit.PUBLIC, ("public", None)


class Router:
    def __init__(
        self,
        *,
        registry: Registry,
        portal: Portal,
        credentials: Credentials,
        public: PublicUrl,
        trust_proxy: tuple[IPNetwork, ...],
        audit_log: audit.AuditLog | None = None,
        dashboard: Tunnel | None = None,
        locate: Callable[[str], Tunnel | None] | None = None,
    ) -> None:
        self.audit = audit_log
        #: The tunnel serving a host: the registry's, or in a cluster the node's answer (this node's
        #: own tunnel, or a hop to the node holding it).
        self.locate = locate or registry.get
        #: The dashboard's application (a Unix socket), reached like a tunnel; None: the plain pages.
        self.dashboard = dashboard
        self._csrf_secret = secrets.token_bytes(32)  # CSRF tokens live as long as this process
        self.registry = registry
        self.portal = portal
        self.credentials = credentials
        self.public = public
        self.trust_proxy = trust_proxy

    def route(self, head: RequestHead, *, scheme: str, peer_ip: str, client: str) -> Decision:
        accept = get_one(head.headers, "accept") or ""
        html = auth.wants_html(accept)
        host, path = head.host, head.path
        # 1. Caddy's TLS ask and health checks call the relay at its own address (any Host but a
        #    tunnel's), over plain HTTP.
        if path in (TLS_ASK_PATH, HEALTH_PATH) and not self.portal.is_served_host(host):
            return Answer(
                self.portal.tls_ask(head) if path == TLS_ASK_PATH else Reply.json(200, {"status": "ok"})
            )
        # 2. Under HTTPS, plain HTTP never carries credentials: no cookie is read or set on it.
        if (
            self.public.secure
            and path != HEALTH_PATH
            and request_scheme(scheme, peer_ip, head.headers, self.trust_proxy) != "https"
        ):
            return Answer(self._to_https(head, html))
        # 3. The login origin.
        if host == self.public.domain:
            return self._relay_host(head, html, client)
        # 4. A tunnel (live, or an owned host whose client is away), and the relay's own paths on it.
        tunnel = self.locate(host)
        owner_id = tunnel.user_id if tunnel is not None else self._offline_owner(host)
        if owner_id is None:
            return Answer(Reply.error(404, f"no tunnel at {host}", html=html))
        if path.startswith(RELAY_PATH_PREFIX) and path != STATUS_PATH:
            return Answer(self.portal.tunnel_relay_path(head))
        # 5. The visitor's credential, then the verdict: an offline host answers only those who may
        #    visit it, so nothing about it reaches anyone else.
        return self._visit(head, owner_id, tunnel, client, accept, html)

    def _offline_owner(self, host: str) -> int | None:
        """The owner of an owned name or verified domain with no live tunnel (None: not served)."""
        return self.portal.host_owner(host) if self.portal.serves(host) else None

    def _visit(
        self, head: RequestHead, owner_id: int, tunnel: Tunnel | None, client: str, accept: str, html: bool
    ) -> Decision:
        try:
            exchange = self._query_token(head, client, owner_id)
            if exchange is not None:
                return Answer(exchange)
            user, key = self.credentials.identify(head, client)
        except RelayError as exc:  # a wrong token, or too many of them
            return Answer(Reply.from_error(exc, html=html), note=str(exc))
        host, user_id = head.host, user.id if user is not None else None
        tunnel_origin = self.public.origin(host)
        # Shares are read only for a visitor who is not the owner (the owner's requests cost nothing).
        shared, public, guest = frozenset[int](), False, None
        if user_id != owner_id:
            shared, public = self.portal.access(host)
            if not public and (user_id is None or user_id not in shared):
                guest_sid, found = self.credentials.guest(head.headers, host)
                if found is not None and auth.guest_may_visit(
                    guest_host=found.host, expires_at=found.expires_at, host=host, now=time.time()
                ):
                    guest, key = found, guest_sid
                elif guest_sid and user_id is None:
                    return Answer(self._guest_gone(html), note="share link ended")
        verdict = auth.decide(
            auth.AccessRequest(
                method=head.method,
                is_upgrade=head.is_upgrade,
                origin=get_one(head.headers, "origin"),
                accept=accept,
                tunnel_origin=tunnel_origin,
                user_id=user_id,
                guest=guest is not None,
            ),
            owner_id=owner_id,
            shared_with=shared,
            public=public,
        )
        if verdict is not auth.Verdict.ALLOW:
            return Answer(self._refuse(verdict, head, tunnel_origin + head.target, html), note=verdict.value)
        if head.path == STATUS_PATH:
            return Answer(self.portal.tunnel_status(host, live=tunnel is not None))
        if tunnel is None:
            return Answer(self.portal.offline(host, html), note="tunnel offline")
        actor, use = visitor_of(user, owner_id=owner_id, shared=shared, guest=guest)
        if self.audit is not None and self.audit.first_visit(host, key or f"public {client}"):
            # The first request of this session on this host goes to the audit log.
            agent = get_one(head.headers, "user-agent")
            self.audit.visit(
                host=host, actor=actor, client=client, user_agent=agent, owner_id=owner_id, use=use
            )
        return Forward(tunnel, html, actor)

    def _relay_host(self, head: RequestHead, html: bool, client: str) -> Decision:
        path = head.path
        if path == SSH_WS_PATH:
            return SshWebSocket()
        if head.method == "POST" and path.startswith(RELAY_PATH_PREFIX):
            if head.framing is Framing.CHUNKED:
                return Answer(Reply.error(411, "Content-Length required", html=html))
            if head.length > MAX_FORM_BYTES:
                return Answer(Reply.error(413, "form too large", html=html))
        if self.dashboard is None or not (path == "/" or path.startswith(DASHBOARD_PATH + "/")):
            return RelayHost()
        return self._to_dashboard(head, html, self.dashboard, client)

    def _to_dashboard(self, head: RequestHead, html: bool, dashboard: Tunnel, client: str) -> Decision:
        """The dashboard, for a visitor signed in on the relay host: the front authenticates, checks
        the Origin of a change, and tells the dashboard who it is and the session's CSRF token."""
        user, sid = self.credentials.relay_session(head.headers)
        if user is None:
            if head.path == "/":
                return RelayHost()  # the sign-in page
            if head.method in ("GET", "HEAD") and html:
                return Answer(Reply.redirect(302, self.public.relay_origin + LOGIN_PATH))
            return Answer(Reply.error(401, "sign in on the relay first", html=html), note="unauthorized")
        if head.method not in ("GET", "HEAD") and not auth.origin_ok(
            method=head.method,
            is_upgrade=head.is_upgrade,
            origin=get_one(head.headers, "origin"),
            tunnel_origin=self.public.relay_origin,
        ):
            return Answer(Reply.error(403, "cross-origin request refused", html=html), note="bad_origin")
        session = Store.session_hash(sid)
        extra = (
            (DASHBOARD_USER_HEADER, str(user.id)),
            (DASHBOARD_SESSION_HEADER, session),
            (DASHBOARD_CSRF_HEADER, csrf_token(self._csrf_secret, session)),
            (DASHBOARD_CLIENT_HEADER, client),
        )
        return Forward(dashboard, html, "", extra)

    def _query_token(self, head: RequestHead, client: str, owner_id: int) -> Reply | None:
        # Decoded names, so that relay%5Ftoken= is recognised too and never reaches the backend.
        # Parsed only when the name could be there, literally or percent-encoded (hot path).
        query = head.query
        if not (TOKEN_QUERY in query or "%" in query):
            return None
        token = query_params(query).get(TOKEN_QUERY)
        if token is None:
            return None
        if head.method not in ("GET", "HEAD"):
            raise Unauthorized(f"?{TOKEN_QUERY}= works on GET links only; send X-Relay-Token")
        return self.portal.exchange_query_token(head, token, client, owner_id)

    def _refuse(self, verdict: auth.Verdict, head: RequestHead, url: str, html: bool) -> Reply:
        if verdict is auth.Verdict.LOGIN:
            # The sign-in starts here: this browser gets a state cookie on the tunnel host, and the
            # hand-off code will be redeemable only together with it.
            state, cookie = self.credentials.sign_in_state(head.headers)
            return Reply.redirect(302, self.portal.login_url(url, state), [cookie])
        if verdict is auth.Verdict.UNAUTHORIZED:
            login = self.portal.login_url(url)
            message = "relay credential required: send X-Relay-Token or sign in"
            return Reply.json(401, {"error": message, "status": 401, "login": login})
        if verdict is auth.Verdict.BAD_ORIGIN:
            return Reply.error(403, "cross-origin request refused", html=html)
        message = "your relay user may not open this tunnel"
        if not html:
            return Reply.error(403, message, html=False)
        # Not a dead end: the visitor may hold another user's token.
        state, cookie = self.credentials.sign_in_state(head.headers)
        page = pages.forbidden_page(message, login_url=self.portal.login_url(url, state))
        return Reply.html(403, page, [cookie])

    def _guest_gone(self, html: bool) -> Reply:
        """A guest whose share link ended (expired, revoked): told so, its cookie cleared."""
        message = "This share link is no longer valid: it expired or was revoked."
        if html:
            reply = Reply.html(410, pages.link_gone_page(message))
        else:
            reply = Reply.error(410, message, html=False)
        reply.headers.append(self.credentials.clear_guest())
        return reply

    def _to_https(self, head: RequestHead, html: bool) -> Reply:
        """The same URL over HTTPS, minus any ``relay_token`` (it was sent in the clear: the visitor
        signs in instead of reusing it)."""
        host = head.host
        if classify_host(host, self.public.domain) is not HostKind.RELAY and not self.portal.is_served_host(
            host
        ):
            return Reply.error(404, f"no tunnel at {host}", html=html)
        query = without_param(head.query, TOKEN_QUERY) if TOKEN_QUERY in head.query else head.query
        location = self.public.origin(host) + head.path + (f"?{query}" if query else "")
        return Reply.redirect(308, location)
