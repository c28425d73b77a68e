"""Responses the relay gives itself: the login origin (the relay's own host), the SSO hand-off and
token exchange on tunnel hosts, and error replies. Each handler returns a :class:`Reply`; the proxy
writes it. Decisions come from :mod:`relay.auth`; this module adds the store and the cookies."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qsl, quote, unquote_plus, urlsplit

from . import auth, pages
from .config import PublicUrl
from .domains import certificate_allowed
from .errors import RelayError, TooManyRequests
from .http1 import Headers, RequestHead, get_one
from .logfmt import emit
from .protocol import (
    HEALTH_PATH,
    LOGIN_PATH,
    LOGOUT_PATH,
    SESSION_COOKIE,
    SESSION_COOKIE_SECURE,
    SESSION_TTL,
    SSO_PATH,
    TOKEN_QUERY,
)
from .rewrite import cookie_value, session_cookie
from .sso import SsoCodes
from .store import Store, User
from .tunnels import Registry

log = logging.getLogger(__name__)

_REASONS = {
    200: "OK", 302: "Found", 303: "See Other", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 411: "Length Required",
    413: "Content Too Large", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}  # fmt: skip

_NO_STORE = ("Cache-Control", "no-store")


def reason(status: int) -> str:
    return _REASONS.get(status, "Error")


@dataclass
class Reply:
    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""

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


def query_params(query: str) -> dict[str, str]:
    """Decoded ``name=value`` pairs (first occurrence wins); never raises, whatever the visitor sent."""
    params: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        params.setdefault(name, value)
    return params


def without_param(query: str, name: str) -> str:
    """``query`` with every ``name=...`` pair removed and the rest kept byte for byte."""
    kept = [p for p in query.split("&") if p and unquote_plus(p.partition("=")[0]) != name]
    return "&".join(kept)


class Portal:
    """The relay's own pages and credential plumbing."""

    def __init__(
        self,
        *,
        store: Store,
        registry: Registry,
        public: PublicUrl,
        sso: SsoCodes,
        limiter: auth.FailureLimiter,
    ) -> None:
        self.store = store
        self.registry = registry
        self.public = public
        self.sso = sso
        self.limiter = limiter
        self.cookie_name = SESSION_COOKIE_SECURE if public.secure else SESSION_COOKIE

    # -- credentials -------------------------------------------------------------------------

    def check_rate(self, client: str) -> None:
        wait = self.limiter.retry_after(client)
        if wait:
            raise TooManyRequests("too many failed credentials from your address", retry_after=wait)

    def verify_token(self, token: str, client: str) -> User | None:
        """A token from a visitor: rate-limited per address; a failure is counted."""
        self.check_rate(client)
        user = self.store.verify_token(token)
        if user is None:
            self.limiter.fail(client)  # logged once, on the request's own line (proxy)
        return user

    def session_user(self, headers: Headers, host: str) -> User | None:
        sid = cookie_value(headers, self.cookie_name)
        return self.store.session_user(sid, host) if sid else None

    def _cookie(self, value: str, max_age: int) -> tuple[str, str]:
        return (
            "Set-Cookie",
            session_cookie(self.cookie_name, value, secure=self.public.secure, max_age=max_age),
        )

    def start_session(self, user: User, host: str) -> tuple[str, str]:
        sid = self.store.create_session(user, host, SESSION_TTL)
        return self._cookie(sid, SESSION_TTL)

    def login_url(self, next_url: str) -> str:
        return f"{self.public.relay_origin}{LOGIN_PATH}?next={quote(next_url, safe='')}"

    def is_served_host(self, host: str) -> bool:
        """A tunnel host: one label under the relay domain, or a verified custom domain."""
        suffix = "." + self.public.domain
        if host.endswith(suffix):
            return "." not in host[: -len(suffix)]
        return self.store.verified_domain_owner(host) is not None

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
        if method not in ("GET", "HEAD") and not auth.origin_ok(
            method=method,
            is_upgrade=head.is_upgrade,
            origin=get_one(head.headers, "origin"),
            tunnel_origin=self.public.relay_origin,
        ):
            return Reply.error(403, "cross-origin request refused", html=html)
        user = self.session_user(head.headers, self.public.domain)
        if path == "/" and method in ("GET", "HEAD"):
            if user is None:
                return Reply.html(200, pages.anonymous_home(relay_host=self.public.domain))
            urls = [self.public.tunnel_url(t.host) for t in self.registry.for_user(user.id)]
            return Reply.html(200, pages.home_page(user=user.name, tunnel_urls=urls))
        if path == LOGIN_PATH and method in ("GET", "HEAD"):
            next_url = self._next(query_params(head.query).get("next", ""))
            if user is not None and next_url:
                return self._hand_off(user, next_url)
            return Reply.html(200, pages.login_page(next_url=next_url, relay_host=self.public.domain))
        if path == LOGIN_PATH and method == "POST":
            return self._login(body, client)
        if path == LOGOUT_PATH and method == "POST":
            return self._logout(head, self.public.relay_origin + LOGIN_PATH)
        if path in (LOGIN_PATH, LOGOUT_PATH, "/"):
            return Reply.error(405, "method not allowed", html=html, headers=[("Allow", "GET, POST")])
        return Reply.error(404, "no such page on the relay", html=html)

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

    def _hand_off(self, user: User, next_url: str, extra: Headers | None = None) -> Reply:
        parts = urlsplit(next_url)
        host = (parts.hostname or "").lower()
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        code = self.sso.issue(user.id, host, user.credential)
        target = f"{self.public.origin(host)}{SSO_PATH}?code={code}&next={quote(path, safe='')}"
        return Reply.redirect(302, target, [("Referrer-Policy", "no-referrer"), *(extra or [])])

    def _login(self, body: bytes, client: str) -> Reply:
        form = query_params(body.decode("utf-8", errors="replace"))
        next_url = self._next(form.get("next", ""))
        token = form.get("token", "").strip()
        try:
            user = self.verify_token(token, client) if token else None
        except TooManyRequests as exc:
            page = pages.login_page(next_url=next_url, error=str(exc), relay_host=self.public.domain)
            return Reply.html(429, page, [("Retry-After", str(exc.retry_after))])
        if user is None:
            page = pages.login_page(
                next_url=next_url, error="That token is not valid.", relay_host=self.public.domain
            )
            return Reply.html(401, page)
        cookie = self.start_session(user, self.public.domain)
        emit(log, logging.INFO, "login", user=user.name, client=client)
        if next_url:
            return self._hand_off(user, next_url, [cookie])
        return Reply.redirect(303, self.public.relay_origin + "/", [cookie])

    def _logout(self, head: RequestHead, location: str) -> Reply:
        sid = cookie_value(head.headers, self.cookie_name)
        if sid:
            self.store.delete_session(sid)
        return Reply.redirect(303, location, [self._cookie("", 0)])

    # -- relay paths on a tunnel host ----------------------------------------------------------

    def tunnel_relay_path(self, head: RequestHead) -> Reply:
        html = auth.wants_html(get_one(head.headers, "accept") or "")
        if head.path == SSO_PATH and head.method in ("GET", "HEAD"):
            params = query_params(head.query)
            grant = self.sso.redeem(params.get("code", ""), head.host)
            found = self.store.user_by_id(grant[0]) if grant is not None else None
            user = replace(found, credential=grant[1]) if found is not None and grant is not None else None
            if user is None:
                return Reply.error(
                    400,
                    "this sign-in link has expired or was already used; open the tunnel URL again",
                    html=html,
                )
            cookie = self.start_session(user, head.host)
            return Reply.redirect(
                302,
                auth.safe_local_path(params.get("next", "/")),
                [cookie, ("Referrer-Policy", "no-referrer")],
            )
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

    def exchange_query_token(self, head: RequestHead, token: str, client: str, owner_id: int) -> Reply:
        """``?relay_token=`` on a tunnel URL: set the host session and 303 to the URL without it."""
        html = auth.wants_html(get_one(head.headers, "accept") or "")
        user = self.verify_token(token, client)
        if user is None:
            return Reply.error(401, "invalid relay token", html=html)
        if not auth.may_visit(user.id, owner_id=owner_id):
            return Reply.error(403, f"user {user.name} may not open this tunnel", html=html)
        query = without_param(head.query, TOKEN_QUERY)
        location = self.public.origin(head.host) + head.path + (f"?{query}" if query else "")
        return Reply.redirect(
            303, location, [self.start_session(user, head.host), ("Referrer-Policy", "no-referrer")]
        )

    def refusal(self, exc: RelayError, *, html: bool) -> Reply:
        headers: Headers = []
        if isinstance(exc, TooManyRequests):
            headers.append(("Retry-After", str(exc.retry_after)))
        return Reply.error(exc.status, str(exc), html=html, headers=headers)
