"""The relay's own pages: the login origin (the relay's own host) with its SSO hand-off, the relay paths
on tunnel hosts (hand-off landing, logout), the ``?relay_token=`` exchange and Caddy's TLS ask. Each
handler returns a :class:`Reply`; decisions come from :mod:`relay.auth`."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from urllib.parse import quote, urlsplit

from .. import auth, pages, sharing
from ..audit import Event
from ..client_wheel import Wheel
from ..config import PublicUrl
from ..domains import certificate_allowed
from ..errors import TooManyRequests
from ..http1 import RequestHead, get_one
from ..limits import Limits
from ..logfmt import emit
from ..names import HostKind, classify_host
from ..protocol import (
    CLIENT_PATH,
    DIST_PATH,
    GUEST_PATH,
    HEALTH_PATH,
    LOGIN_PATH,
    LOGOUT_PATH,
    SHARE_PATH,
    SSO_PATH,
    STATE_TTL,
    STATUS_PATH,
    TOKEN_QUERY,
)
from ..rewrite import query_params, without_param
from ..sso import SharedSsoCodes, SsoCodes
from ..store import ShareInfo, Store, User
from ..tunnels import Registry
from .credentials import Credentials, SessionChange, valid_state
from .reply import Reply

log = logging.getLogger(__name__)

#: Seconds a guest's cookie outlives its link in the browser (see Portal._guest_session).
GUEST_COOKIE_GRACE = 86400
#: On every reply that carries (or follows) a share code or a hand-off code.
_NO_REFERRER = ("Referrer-Policy", "no-referrer")


def _iso(at: float | None) -> str | None:
    return None if at is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


class Portal:
    """The relay's own pages."""

    def __init__(
        self,
        *,
        store: Store,
        registry: Registry,
        public: PublicUrl,
        sso: SsoCodes | SharedSsoCodes,
        credentials: Credentials,
        limits: Limits | None = None,
        client_wheel: Wheel | None = None,
    ) -> None:
        self.limits = limits or Limits()
        #: The client this relay serves (None: it could not be built; the pages say so).
        self.client_wheel = client_wheel
        self.store = store
        self.registry = registry
        self.public = public
        self.sso = sso
        self.credentials = credentials

    def login_url(self, next_url: str, state: str = "") -> str:
        url = f"{self.public.relay_origin}{LOGIN_PATH}?next={quote(next_url, safe='')}"
        return url + (f"&state={state}" if state else "")

    def shared_with(self, host: str) -> frozenset[int]:
        return self.store.shared_with(host)

    def access(self, host: str) -> tuple[frozenset[int], bool]:
        """(users ``host`` is shared with, whether it is public)."""
        return self.store.access(host)

    def may_visit(self, user_id: int, host: str, owner_id: int | None = None) -> bool:
        """The owner of ``host`` (looked up unless given) or a user it is shared with."""
        owner = self.host_owner(host) if owner_id is None else owner_id
        if owner is None:
            return False
        return user_id == owner or auth.may_visit(user_id, owner_id=owner, shared_with=self.shared_with(host))

    def host_owner(self, host: str) -> int | None:
        """Who owns a tunnel host: the live tunnel's user, else the name's or the domain's owner."""
        tunnel = self.registry.get(host)
        if tunnel is not None:
            return tunnel.user_id
        if classify_host(host, self.public.domain) is HostKind.CUSTOM:
            return self.store.verified_domain_owner(host)
        return self.store.name_owner(host.partition(".")[0])

    def is_served_host(self, host: str) -> bool:
        """A tunnel host: one label under the relay domain, or a verified custom domain."""
        kind = classify_host(host, self.public.domain)
        if kind is HostKind.CUSTOM:
            return self.store.verified_domain_owner(host) is not None
        return kind is HostKind.NAME

    def serves(self, host: str) -> bool:
        """Is ``host`` one the relay serves: its own, an owned ``NAME.DOMAIN``, a verified domain?"""
        return certificate_allowed(
            host,
            relay_domain=self.public.domain,
            name_owned=lambda name: self.store.name_owner(name) is not None,
            domain_verified=lambda domain: self.store.verified_domain_owner(domain) is not None,
        )

    def tls_ask(self, head: RequestHead) -> Reply:
        """Caddy's on-demand TLS asks before it requests a certificate: yes only for hosts we serve."""
        if head.method not in ("GET", "HEAD"):
            return Reply.error(405, "method not allowed", html=False, headers=[("Allow", "GET")])
        host = query_params(head.query).get("domain", "")
        if not host:
            return Reply.error(400, "expected ?domain=HOST", html=False)
        if not self.serves(host):
            emit(log, logging.INFO, "tls.ask_refused", host=host)
            return Reply.json(404, {"domain": host[:253], "allowed": False})
        return Reply.json(200, {"domain": host, "allowed": True})

    # -- the login origin ----------------------------------------------------------------------

    def relay_host(self, head: RequestHead, body: bytes, client: str) -> Reply:
        """Requests to the relay's own host (never a tunnel)."""
        path, method = head.path, head.method
        html = auth.wants_html(get_one(head.headers, "accept") or "")
        if path == HEALTH_PATH:
            return Reply.json(200, {"status": "ok"})
        if path == CLIENT_PATH or path.startswith(DIST_PATH + "/"):
            return self._client(path, method, html)
        if path == "/favicon.ico":  # asked by every browser; the pages name their own icon
            return Reply(204, [("Cache-Control", "max-age=86400")])
        if method not in ("GET", "HEAD") and not auth.origin_ok(
            method=method,
            is_upgrade=head.is_upgrade,
            origin=get_one(head.headers, "origin"),
            tunnel_origin=self.public.relay_origin,
        ):
            return Reply.error(403, "cross-origin request refused", html=html)
        user = self.credentials.session_user(head.headers, self.public.domain)
        if path == "/" and method in ("GET", "HEAD"):
            if user is None:
                return Reply.html(200, pages.anonymous_home(relay_host=self.public.domain))
            mine = self.registry.for_user(user.id)
            urls = [self.public.tunnel_url(t.host) for t in mine]
            public = frozenset(self.public.tunnel_url(t.host) for t in mine if self.store.is_public(t.host))
            shared = [
                (self.public.tunnel_url(host), owner)
                for host, owner in self.store.hosts_shared_with(user.id)
                if self.registry.get(host) is not None
            ]
            page = pages.home_page(user=user.name, tunnel_urls=urls, shared=shared, public=public)
            return Reply.html(200, page)
        if path.startswith(SHARE_PATH + "/") and method in ("GET", "HEAD"):
            return self._open_link(path[len(SHARE_PATH) + 1 :])
        if path == SHARE_PATH and method in ("GET", "HEAD"):
            return self._continue_link(head)
        if path == LOGIN_PATH and method in ("GET", "HEAD"):
            params = query_params(head.query)
            next_url, state = self._next(params.get("next", "")), valid_state(params.get("state", ""))
            if user is not None and next_url:
                return self._hand_off(user, next_url, state)
            page = pages.login_page(next_url=next_url, relay_host=self.public.domain, state=state)
            return Reply.html(200, page)
        if path == LOGIN_PATH and method == "POST":
            return self._login(body, client)
        if path == LOGOUT_PATH and method == "POST":
            return self._logout(head, self.public.relay_origin + LOGIN_PATH)
        if path in (LOGIN_PATH, LOGOUT_PATH, "/"):
            return Reply.error(405, "method not allowed", html=html, headers=[("Allow", "GET, POST")])
        return Reply.error(404, "no such page on the relay", html=html)

    def _client(self, path: str, method: str, html: bool) -> Reply:
        """The client's install page and its wheel: public, read-only, no credential read or set."""
        if method not in ("GET", "HEAD"):
            return Reply.error(405, "method not allowed", html=html, headers=[("Allow", "GET, HEAD")])
        wheel = self.client_wheel
        if wheel is None:
            return Reply.error(503, "this relay cannot serve its client; see its log", html=html)
        url = f"{self.public.relay_origin}{DIST_PATH}/{wheel.filename}"
        if path == CLIENT_PATH:
            page = pages.client_page(
                relay_origin=self.public.relay_origin,
                wheel_url=url,
                sha256=wheel.sha256,
                version=wheel.version,
            )
            return Reply.html(200, page)
        if path != f"{DIST_PATH}/{wheel.filename}":
            return Reply.error(404, f"this relay serves only {wheel.filename}", html=html)
        headers = [
            ("Content-Type", "application/octet-stream"),
            ("Content-Disposition", f'attachment; filename="{wheel.filename}"'),
            ("ETag", f'"{wheel.sha256}"'),
            ("Cache-Control", "public, max-age=300"),
            ("X-Content-Type-Options", "nosniff"),
        ]
        return Reply(200, headers, wheel.data)

    def _next(self, raw: str) -> str:
        return (
            auth.safe_next(
                raw,
                scheme=self.public.scheme,
                port=self.public.port,
                relay_domain=self.public.domain,
                is_served_host=self.is_served_host,
            )
            or ""
        )

    def _hand_off(
        self,
        user: User,
        next_url: str,
        state: str,
        session: Callable[[], SessionChange] | None = None,
    ) -> Reply:
        """Redirect with a one-time code to the tunnel host of ``next_url`` (validated by _next).

        A code is minted only for a host ``user`` may visit, and only for a sign-in that a tunnel
        host started (``state``, its cookie there): a sign-in without one goes to ``next_url`` itself,
        whose host starts one. ``session`` makes the login's cookie, only once the outcome is known:
        a request that fails on the way leaves no session behind."""
        parts = urlsplit(next_url)
        host = (parts.hostname or "").lower()
        if not self.may_visit(user.id, host):
            error = f"You are signed in as {user.name}, who may not open {host}. Sign in as someone else:"
            page = pages.login_page(
                next_url=next_url, error=error, relay_host=self.public.domain, state=state
            )
            return Reply.html(403, page)
        signed_in = session() if session is not None else None
        if not state:
            reply = Reply.redirect(302, next_url, [("Referrer-Policy", "no-referrer")])
            return signed_in.on(reply) if signed_in is not None else reply
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            code = self.sso.issue(user.id, host, user.credential, state=state)
        except TooManyRequests as exc:
            return Reply.error(429, str(exc), html=True, headers=[("Retry-After", str(exc.retry_after))])
        target = f"{self.public.origin(host)}{SSO_PATH}?code={code}&next={quote(path, safe='')}"
        reply = Reply.redirect(302, target, [("Referrer-Policy", "no-referrer")])
        return signed_in.on(reply) if signed_in is not None else reply

    # -- share links -------------------------------------------------------------------------

    def _link_gone(self, link: ShareInfo | None) -> str | None:
        guests = self.store.count_guest_sessions(link.id) if link is not None else 0
        return sharing.link_gone(link, guests=guests, max_guests=self.limits.share_max_guests_per_link)

    def _gone(self, message: str, *headers: tuple[str, str]) -> Reply:
        return Reply.html(410, pages.link_gone_page(message), [_NO_REFERRER, *headers])

    def _open_link(self, code: str) -> Reply:
        """``/_relay/share/CODE``: the code stays on the relay host (a cookie on the share path), and
        the browser goes to the link's host to start a hand-off there (its state cookie)."""
        link = self.store.link_by_code(code)
        gone = self._link_gone(link)
        if gone is not None or link is None:
            return self._gone(gone or "")
        target = self.public.origin(link.host) + GUEST_PATH
        return Reply.redirect(302, target, [self.credentials.link_cookie(code, STATE_TTL), _NO_REFERRER])

    def _continue_link(self, head: RequestHead) -> Reply:
        """``/_relay/share?host=H&state=S``, back from the link's host: a guest hand-off code bound to
        that browser's state, for that host only."""
        params = query_params(head.query)
        host, state = params.get("host", "").lower(), valid_state(params.get("state", ""))
        clear = self.credentials.link_cookie("", 0)
        link = self.store.link_by_code(self.credentials.link_code(head.headers))
        gone = self._link_gone(link)
        if gone is not None or link is None:
            return self._gone(gone or "", clear)
        if link.host != host or not state:
            return self._gone("This share link was not opened in this browser; open it again.", clear)
        try:
            code = self.sso.issue(link.owner_id, host, state=state, guest=link.id)
        except TooManyRequests as exc:
            return Reply.error(429, str(exc), html=True, headers=[("Retry-After", str(exc.retry_after))])
        target = f"{self.public.origin(host)}{SSO_PATH}?code={code}&next=%2F"
        return Reply.redirect(302, target, [clear, _NO_REFERRER])

    def _login(self, body: bytes, client: str) -> Reply:
        form = query_params(body.decode("utf-8", errors="replace"))
        next_url, state = self._next(form.get("next", "")), valid_state(form.get("state", ""))
        token = form.get("token", "").strip()
        domain = self.public.domain
        try:
            user = self.credentials.verify_token(token, client, via="login form") if token else None
        except TooManyRequests as exc:
            page = pages.login_page(next_url=next_url, error=str(exc), relay_host=domain, state=state)
            return Reply.html(429, page, [("Retry-After", str(exc.retry_after))])
        if user is None:
            page = pages.login_page(
                next_url=next_url, error="That token is not valid.", relay_host=domain, state=state
            )
            return Reply.html(401, page)
        emit(log, logging.INFO, "login", user=user.name, client=client)
        self._signed_in(user, client, "", "login form")
        if next_url:
            return self._hand_off(user, next_url, state, lambda: self.credentials.start_session(user, domain))
        session = self.credentials.start_session(user, self.public.domain)
        return session.on(Reply.redirect(303, self.public.relay_origin + "/"))

    def _signed_in(self, user: User, client: str, host: str, via: str) -> None:
        if self.credentials.audit is not None:
            event = Event("signin", user.name, host, client, {"via": via}, user_id=user.id)
            self.credentials.audit.record(event)

    def _logout(self, head: RequestHead, location: str) -> Reply:
        return self.credentials.end_session(head.headers).on(Reply.redirect(303, location))

    # -- relay paths on a tunnel host ----------------------------------------------------------

    def tunnel_relay_path(self, head: RequestHead) -> Reply:
        html = auth.wants_html(get_one(head.headers, "accept") or "")
        if head.path == SSO_PATH and head.method in ("GET", "HEAD"):
            params = query_params(head.query)
            state = self.credentials.state_of(head.headers)  # the browser that started this sign-in
            grant = self.sso.redeem(params.get("code", ""), head.host, state)
            if grant is not None and grant.guest:
                return self._guest_session(grant.guest, head.host)
            found = self.store.user_by_id(grant.user_id) if grant is not None else None
            user = replace(found, credential=grant.credential) if found is not None and grant else None
            if user is None:
                return Reply.error(
                    400,
                    "this sign-in link has expired or was already used; open the tunnel URL again",
                    html=html,
                )
            reply = Reply.redirect(302, auth.safe_local_path(params.get("next", "/")))
            self.credentials.start_session(user, head.host).on(reply)  # the session cookie first
            reply.headers += [self.credentials.clear_state(), ("Referrer-Policy", "no-referrer")]
            return reply
        if head.path == GUEST_PATH and head.method in ("GET", "HEAD"):
            # A share link's hand-off starts here, so its code is redeemed only by this browser.
            state, cookie = self.credentials.sign_in_state(head.headers)
            back = f"{self.public.relay_origin}{SHARE_PATH}?host={quote(head.host)}&state={state}"
            return Reply.redirect(302, back, [cookie, _NO_REFERRER])
        if head.path == LOGOUT_PATH and head.method == "POST":
            tunnel_origin = self.public.origin(head.host)
            if not auth.origin_ok(
                method="POST",
                is_upgrade=False,
                origin=get_one(head.headers, "origin"),
                tunnel_origin=tunnel_origin,
            ):
                return Reply.error(403, "cross-origin request refused", html=html)
            return self._logout(head, self.public.relay_origin + LOGIN_PATH)
        return Reply.error(404, "paths under /_relay/ belong to the relay", html=html)

    def _guest_session(self, share_id: str, host: str) -> Reply:
        """The end of a share link's hand-off: a guest session cookie, and on to the app."""
        link = self.store.get_share_or_none(share_id)
        if link is None or link.expires_at is None:
            return self._gone("This share link is no longer valid: it expired or was revoked.")
        # The browser keeps the cookie a day past the link's end (the store ends the session on time),
        # so a guest who comes back late is told the link ended, not sent to a sign-in page.
        ttl = max(1, int(link.expires_at - time.time())) + GUEST_COOKIE_GRACE
        change = self.credentials.start_guest_session(
            share_id, host, max_per_link=self.limits.share_max_guests_per_link, ttl=ttl
        )
        reply = change.on(Reply.redirect(302, "/"))
        reply.headers += [self.credentials.clear_state(), _NO_REFERRER]
        return reply

    # -- an offline host, and the status its page polls -----------------------------------------

    def _last_seen(self, host: str) -> float | None:
        seen = self.store.last_seen(host)
        return seen[0] if seen is not None else None

    def tunnel_status(self, host: str, *, live: bool) -> Reply:
        seen = time.time() if live else self._last_seen(host)
        return Reply.json(200, {"host": host, "live": live, "last_seen": _iso(seen)})

    def offline(self, host: str, html: bool) -> Reply:
        """502 for a visitor who may visit ``host``, whose client is away."""
        seen = self._last_seen(host)
        message = f"the tunnel {host} is offline: its client is not connected"
        if not html:
            return Reply.json(502, {"error": message, "status": 502, "last_seen": _iso(seen)})
        nonce = secrets.token_urlsafe(12)
        page = pages.offline_page(
            host=host, last_seen=seen, now=time.time(), nonce=nonce, status_path=STATUS_PATH
        )
        csp = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
        return Reply.html(502, page, [("Content-Security-Policy", csp)])

    def exchange_query_token(self, head: RequestHead, token: str, client: str, owner_id: int) -> Reply:
        """``?relay_token=`` on a tunnel URL: set the host session and 303 to the URL without it."""
        html = auth.wants_html(get_one(head.headers, "accept") or "")
        user = self.credentials.verify_token(token, client, host=head.host, via=TOKEN_QUERY)
        if user is None:
            return Reply.error(401, "invalid relay token", html=html)
        if not self.may_visit(user.id, head.host, owner_id):
            message = f"user {user.name} may not open this tunnel"
            if not html:
                return Reply.error(403, message, html=False)
            url = self.public.origin(head.host) + head.path
            state, cookie = self.credentials.sign_in_state(head.headers)
            return Reply.html(
                403, pages.forbidden_page(message, login_url=self.login_url(url, state)), [cookie]
            )
        self._signed_in(user, client, head.host, TOKEN_QUERY)
        query = without_param(head.query, TOKEN_QUERY)
        location = self.public.origin(head.host) + head.path + (f"?{query}" if query else "")
        reply = Reply.redirect(303, location, [("Referrer-Policy", "no-referrer")])
        return self.credentials.start_session(user, head.host).on(reply)
