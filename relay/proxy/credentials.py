"""A visitor's relay credential: the ``X-Relay-Token`` header or a host session cookie, checked per
request; failures are counted per client address and rate-limited (DESIGN §3.3)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from ..audit import ANONYMOUS, AuditLog, Event
from ..auth import FailureLimiter
from ..config import PublicUrl
from ..errors import TooManyRequests, Unauthorized
from ..http1 import Headers, RequestHead, get_one
from ..protocol import (
    GUEST_COOKIE,
    GUEST_COOKIE_SECURE,
    LINK_COOKIE,
    LINK_COOKIE_SECURE,
    SESSION_COOKIE,
    SESSION_COOKIE_SECURE,
    SESSION_TTL,
    SHARE_PATH,
    STATE_COOKIE,
    STATE_COOKIE_SECURE,
    STATE_TTL,
    TOKEN_HEADER,
)
from ..rewrite import cookie_value, session_cookie
from ..store import Guest, Store, User, new_session_id
from .reply import Reply


class Credentials:
    def __init__(
        self,
        *,
        store: Store,
        limiter: FailureLimiter,
        public: PublicUrl,
        max_sessions: int = 200,
        audit: AuditLog | None = None,
    ) -> None:
        self.store = store
        self.audit = audit
        self.max_sessions = max_sessions
        self.limiter = limiter
        self.public = public
        self.cookie_name = SESSION_COOKIE_SECURE if public.secure else SESSION_COOKIE
        self.state_name = STATE_COOKIE_SECURE if public.secure else STATE_COOKIE
        self.guest_name = GUEST_COOKIE_SECURE if public.secure else GUEST_COOKIE
        self.link_name = LINK_COOKIE_SECURE if public.secure else LINK_COOKIE

    def check_rate(self, client: str) -> None:
        wait = self.limiter.retry_after(client)
        if wait:
            raise TooManyRequests("too many failed credentials from your address", retry_after=wait)

    def verify_token(self, token: str, client: str, *, host: str = "", via: str = "header") -> User | None:
        """A token from a visitor: rate-limited per address; a failure is counted and audited (where
        it came from, never what was sent)."""
        self.check_rate(client)
        user = self.store.verify_token(token)
        if user is None:
            self.limiter.fail(client)  # logged once, on the request's own access line
            if self.audit is not None:
                self.audit.record(Event("signin_failed", ANONYMOUS, host, client, {"via": via}))
        return user

    def relay_session(self, headers: Headers) -> tuple[User | None, str]:
        """The relay host's signed-in user and the session id (the cookie), or (None, "")."""
        sid = cookie_value(headers, self.cookie_name) or ""
        user = self.store.session_user(sid, self.public.domain) if sid else None
        return user, sid if user is not None else ""

    def session_user(self, headers: Headers, host: str) -> User | None:
        sid = cookie_value(headers, self.cookie_name)
        return self.store.session_user(sid, host) if sid else None

    def identify(self, head: RequestHead, client: str) -> tuple[User | None, str]:
        """The user behind the request (header first, then the session cookie), or None; and the
        credential it came with (in memory only: the audit's "first request of this session").

        A token that is sent but wrong is refused (:class:`Unauthorized`), never treated as absent."""
        token = get_one(head.headers, TOKEN_HEADER)
        if token is not None:
            user = self.verify_token(token.strip(), client, host=head.host)
            if user is None:
                raise Unauthorized("invalid X-Relay-Token")
            return user, token
        sid = cookie_value(head.headers, self.cookie_name)
        user = self.store.session_user(sid, head.host) if sid else None
        return user, sid or ""

    def guest(self, headers: Headers, host: str) -> tuple[str, Guest | None]:
        """(the guest cookie sent or "", the live link session it names on ``host`` or None)."""
        sid = cookie_value(headers, self.guest_name)
        if not sid:
            return "", None
        return sid, self.store.guest_session(sid, host)

    def start_guest_session(self, share_id: str, host: str, *, max_per_link: int, ttl: int) -> SessionChange:
        """A guest session of share link ``share_id`` on ``host`` (it ends with the link, whatever
        the cookie's ``ttl`` says)."""
        sid = new_session_id()
        return SessionChange(
            ("Set-Cookie", session_cookie(self.guest_name, sid, secure=self.public.secure, max_age=ttl)),
            lambda store: store.insert_guest_session(sid, share_id, host, max_per_link=max_per_link),
        )

    def clear_guest(self) -> tuple[str, str]:
        return ("Set-Cookie", session_cookie(self.guest_name, "", secure=self.public.secure, max_age=0))

    def link_cookie(self, code: str, max_age: int) -> tuple[str, str]:
        """The relay host's note of the share link being opened (its own path only)."""
        cookie = session_cookie(
            self.link_name, code, secure=self.public.secure, max_age=max_age, path=SHARE_PATH
        )
        return ("Set-Cookie", cookie)

    def link_code(self, headers: Headers) -> str:
        return cookie_value(headers, self.link_name) or ""

    def sign_in_state(self, headers: Headers) -> tuple[str, tuple[str, str]]:
        """The browser's sign-in state (kept if it has a well-formed one, so two tabs signing in at
        once share it) and the ``Set-Cookie`` that (re)sets it on the tunnel host."""
        state = self.state_of(headers) or secrets.token_urlsafe(18)
        cookie = session_cookie(self.state_name, state, secure=self.public.secure, max_age=STATE_TTL)
        return state, ("Set-Cookie", cookie)

    def state_of(self, headers: Headers) -> str:
        return valid_state(cookie_value(headers, self.state_name) or "")

    def clear_state(self) -> tuple[str, str]:
        return ("Set-Cookie", session_cookie(self.state_name, "", secure=self.public.secure, max_age=0))

    def cookie(self, value: str, max_age: int) -> tuple[str, str]:
        return (
            "Set-Cookie",
            session_cookie(self.cookie_name, value, secure=self.public.secure, max_age=max_age),
        )

    def start_session(self, user: User, host: str) -> SessionChange:
        """A new host session for ``user``: its ``Set-Cookie`` header, and the store write that must
        succeed before the reply carrying it is sent (it runs off the event loop)."""
        sid, cap = new_session_id(), self.max_sessions
        return SessionChange(
            self.cookie(sid, SESSION_TTL),
            lambda store: store.insert_session(sid, user, host, SESSION_TTL, max_per_user=cap),
        )

    def end_session(self, headers: Headers) -> SessionChange:
        sid = cookie_value(headers, self.cookie_name)
        return SessionChange(self.cookie("", 0), (lambda store: store.delete_session(sid)) if sid else None)


@dataclass(frozen=True)
class SessionChange:
    """A session cookie to send and the store write behind it (None: nothing to write)."""

    header: tuple[str, str]
    write: Callable[[Store], object] | None

    def on(self, reply: Reply) -> Reply:
        """``reply`` with the cookie added and the write attached (done before it is sent)."""
        reply.headers.append(self.header)
        if self.write is not None:
            reply.writes.append(self.write)
        return reply


_STATE = re.compile(r"[A-Za-z0-9_-]{16,64}")


def valid_state(value: str) -> str:
    """``value`` if it has the shape of a state the relay makes, else "" (then none is used)."""
    return value if _STATE.fullmatch(value) else ""
