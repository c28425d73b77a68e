"""What the store returns: plain frozen records, no connection attached."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

#: Sessions one user may hold at once (all browsers and tunnel hosts); a new one replaces the oldest.
MAX_SESSIONS_PER_USER = 200


@dataclass(frozen=True)
class User:
    id: int
    name: str
    is_admin: bool
    created_at: float
    #: The credential this user was recognised by: a token id, or "key:ID". Empty when looked up by name.
    credential: str = ""


@dataclass(frozen=True)
class TokenInfo:
    id: str
    user: str
    label: str
    created_at: float
    expires_at: float | None
    last_used_at: float | None


@dataclass(frozen=True)
class KeyInfo:
    id: int
    user: str
    fingerprint: str
    public_key: str
    comment: str
    created_at: float


@dataclass(frozen=True)
class ShareInfo:
    id: str
    host: str
    owner: str
    kind: str  # "user", "link" or "public"
    user: str | None  # who it is shared with (a user share)
    created_at: float
    expires_at: float | None
    label: str | None = None  # a link's label
    uses: int = 0  # visits so far: sessions of the shared user, guests of a link, public visitors
    owner_id: int = 0


class AuditRow(NamedTuple):
    """One stored audit event (``detail`` is a JSON object)."""

    at: float
    event: str
    actor: str
    host: str
    client: str
    detail: str
    owner_id: int | None
    user_id: int | None


@dataclass(frozen=True)
class Guest:
    """A guest session's link: valid for ``host`` until ``expires_at``."""

    share_id: str
    label: str
    owner_id: int
    host: str
    expires_at: float


@dataclass(frozen=True)
class DomainClaim:
    domain: str
    user: str
    user_id: int
    challenge: str
    created_at: float
    verified_at: float | None

    @property
    def verified(self) -> bool:
        return self.verified_at is not None


@dataclass(frozen=True)
class LiveTunnel:
    host: str
    user: str
    client: str
    since: float
    bytes_in: int
    bytes_out: int
    public: bool = False
    node: str = ""  # the cluster node holding it ("" on a single relay)
