"""Single sign-on hand-off codes: the login origin gives a browser a code for one tunnel host, and
that host exchanges it for its own session. Codes are single-use, short-lived and bound to one host,
so a leaked code (in a log or a Referer) is worth nothing after a minute or after its first use."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from .protocol import SSO_CODE_TTL


@dataclass(frozen=True)
class _Grant:
    user_id: int
    credential: str
    host: str
    expires: float


class SsoCodes:
    """In-memory table of outstanding codes. A relay restart voids them; the browser just logs in again."""

    def __init__(
        self, ttl: float = SSO_CODE_TTL, clock: Callable[[], float] = time.monotonic, max_codes: int = 50_000
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        self._max = max_codes
        self._codes: dict[str, _Grant] = {}

    def issue(self, user_id: int, host: str, credential: str = "") -> str:
        now = self._clock()
        if len(self._codes) >= self._max:
            self._codes = {c: g for c, g in self._codes.items() if g.expires > now}
            while len(self._codes) >= self._max:  # still full: drop the oldest
                self._codes.pop(next(iter(self._codes)))
        code = secrets.token_urlsafe(24)
        self._codes[code] = _Grant(user_id, credential, host, now + self._ttl)
        return code

    def redeem(self, code: str, host: str) -> tuple[int, str] | None:
        """(user id, credential) a code was issued for, if it is valid for ``host``; spent either way."""
        grant = self._codes.pop(code, None)
        if grant is None or grant.host != host or grant.expires <= self._clock():
            return None
        return grant.user_id, grant.credential
