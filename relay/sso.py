"""Single sign-on hand-off codes: the login origin gives a browser a code for one tunnel host, and
that host exchanges it for its own session. Codes are single-use, short-lived and bound to one host,
so a leaked code (in a log or a Referer) is worth nothing after a minute or after its first use.

Every code lives the same time, so issue order is expiry order: the table is kept in that order and
expired codes leave from its front. Issuing, redeeming and expiring each cost O(1) amortized,
whatever the number of outstanding codes; a full table drops its oldest code, and a user with too
many outstanding codes is refused (one user's sign-in storm cannot push out other users' codes).
"""

from __future__ import annotations

import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .errors import TooManyRequests
from .protocol import SSO_CODE_TTL
from .store import Store
from .store.tokens import hash_secret


@dataclass(frozen=True)
class Grant:
    """What a redeemed code stands for: a user's sign-in, or (``guest`` set) a share link's guest,
    in which case ``user_id`` is only the link owner's, for the per-user cap, never an identity."""

    user_id: int
    credential: str
    host: str
    state: str  # the sign-in state cookie of the browser the code is for
    expires: float
    guest: str = ""  # the share link's id


class SsoCodes:
    """In-memory table of outstanding codes. A relay restart voids them; the browser just logs in again."""

    def __init__(
        self,
        ttl: float = SSO_CODE_TTL,
        clock: Callable[[], float] = time.monotonic,
        max_codes: int = 50_000,
        max_per_user: int = 100,
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        self._max = max_codes
        self._max_per_user = max_per_user
        self._codes: OrderedDict[str, Grant] = OrderedDict()
        self._per_user: Counter[int] = Counter()

    def issue(self, user_id: int, host: str, credential: str = "", *, state: str, guest: str = "") -> str:
        """A new code for ``host``, redeemable only with ``state`` (the browser's state cookie);
        :class:`TooManyRequests` if this user already has ``max_per_user`` open. With ``guest`` (a
        share link's id) it is a guest's code, counted against the link owner ``user_id``."""
        now = self._clock()
        self._expire(now)
        if self._per_user[user_id] >= self._max_per_user:
            raise TooManyRequests(
                "too many sign-ins in progress for this user; finish one or wait a minute",
                retry_after=int(self._ttl),
            )
        while len(self._codes) >= self._max:
            self._drop(self._codes.popitem(last=False)[1])
        code = secrets.token_urlsafe(24)
        self._codes[code] = Grant(user_id, credential, host, state, now + self._ttl, guest)
        self._per_user[user_id] += 1
        return code

    def redeem(self, code: str, host: str, state: str) -> Grant | None:
        """The grant a code was issued for, if it is valid for ``host`` and presented with the state it
        was bound to; spent either way."""
        grant = self._codes.pop(code, None)
        if grant is None:
            return None
        self._drop(grant)
        same_browser = bool(state) and secrets.compare_digest(grant.state.encode(), state.encode())
        if grant.host != host or not same_browser or grant.expires <= self._clock():
            return None
        return grant

    def _expire(self, now: float) -> None:
        while self._codes:
            code, grant = next(iter(self._codes.items()))
            if grant.expires > now:
                return
            del self._codes[code]
            self._drop(grant)

    def _drop(self, grant: Grant) -> None:
        """Account for ``grant`` having left the table."""
        self._per_user[grant.user_id] -= 1
        if not self._per_user[grant.user_id]:
            del self._per_user[grant.user_id]

    def __len__(self) -> int:
        return len(self._codes)

    def outstanding(self, user_id: int) -> int:
        return self._per_user.get(user_id, 0)


class SharedSsoCodes:
    """The codes of a cluster, in its store: any node redeems a code any node minted (a browser's
    sign-in may land on one node and its tunnel host on another). The same rules as
    :class:`SsoCodes`: single use (the delete that redeems is atomic), short-lived, bound to one host
    and one browser's state, capped per user. Runs where store reads run (off the event loop)."""

    def __init__(self, store: Store, ttl: float = SSO_CODE_TTL, max_per_user: int = 100) -> None:
        self._store = store
        self._ttl = ttl
        self._max_per_user = max_per_user

    def issue(self, user_id: int, host: str, credential: str = "", *, state: str, guest: str = "") -> str:
        code = secrets.token_urlsafe(24)
        kept = self._store.issue_sso(
            code, user_id=user_id, credential=credential, host=host, state=state, guest=guest,
            ttl=self._ttl, max_per_user=self._max_per_user,
        )  # fmt: skip
        if not kept:
            raise TooManyRequests(
                "too many sign-ins in progress for this user; finish one or wait a minute",
                retry_after=int(self._ttl),
            )
        return code

    def redeem(self, code: str, host: str, state: str) -> Grant | None:
        if not code or len(code) > 100:
            return None
        found = self._store.redeem_sso(code)
        if found is None:
            return None
        user_id, credential, bound, state_hash, guest, expires = found
        same_browser = bool(state) and secrets.compare_digest(state_hash, hash_secret(state))
        if bound != host or not same_browser or expires <= time.time():
            return None
        return Grant(user_id, credential, bound, state, expires, guest)
