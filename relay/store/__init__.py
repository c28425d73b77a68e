"""The only SQL in the relay: users, credentials, names, domains, shares, sessions, audit, tunnels.

Two engines hold the same schema behind one interface (:class:`Store`): SQLite in the data dir, the
embedded default, and PostgreSQL for a cluster of nodes (``--store postgresql://…``).
"""

from __future__ import annotations

import sqlite3

from ..errors import StoreError
from .durations import parse_duration
from .models import (
    MAX_SESSIONS_PER_USER,
    AuditRow,
    DomainClaim,
    Guest,
    KeyInfo,
    LiveTunnel,
    ShareInfo,
    TokenInfo,
    User,
)
from .store import Store
from .tokens import TOKEN_PREFIX, new_session_id, split_token

#: What a store call may raise when the database is busy, full, unreachable or broken (the
#: PostgreSQL engine raises StoreError for all of its driver's errors). Callers that must keep
#: serving (the proxy) catch these and answer 503 instead of dropping the connection.
STORE_ERRORS: tuple[type[Exception], ...] = (StoreError, sqlite3.Error)

__all__ = [
    "MAX_SESSIONS_PER_USER",
    "STORE_ERRORS",
    "TOKEN_PREFIX",
    "AuditRow",
    "DomainClaim",
    "Guest",
    "KeyInfo",
    "LiveTunnel",
    "ShareInfo",
    "Store",
    "TokenInfo",
    "User",
    "new_session_id",
    "parse_duration",
    "split_token",
]
