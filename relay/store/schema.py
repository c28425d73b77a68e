"""The schema, per engine. Both engines hold the same tables at the same version number.

SQLite's list is its history: a data dir made by any earlier relay is brought forward step by step
(``PRAGMA user_version`` counts the steps). PostgreSQL support began at version 9, so a new
PostgreSQL database is created at 9 in one script; a later change appends one step to each list,
and :data:`SCHEMA_VERSION` must agree with both.
"""

from __future__ import annotations

SQLITE_MIGRATIONS: tuple[str, ...] = (
    # v1
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        is_admin INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    );
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        hash BLOB NOT NULL,
        label TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        expires_at REAL,
        last_used_at REAL
    );
    CREATE TABLE ssh_keys (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        fingerprint TEXT NOT NULL UNIQUE,
        public_key TEXT NOT NULL,
        comment TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL
    );
    CREATE TABLE names (
        name TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        claimed_at REAL NOT NULL
    );
    CREATE TABLE sessions (
        hash BLOB PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        host TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE TABLE live_tunnels (
        host TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL,
        client TEXT NOT NULL,
        since REAL NOT NULL,
        bytes_in INTEGER NOT NULL DEFAULT 0,
        bytes_out INTEGER NOT NULL DEFAULT 0
    );
    """,
    # v2: a session remembers the token it came from, so revoking the token ends the session too.
    """
    ALTER TABLE sessions ADD COLUMN token_id TEXT REFERENCES tokens(id) ON DELETE CASCADE
    """,
    # v3: custom domains. Claims are per (domain, user) until one is verified, so an unverified claim
    # cannot squat a domain; at most one verified claim per domain (the partial unique index).
    """
    CREATE TABLE domains (
        domain TEXT NOT NULL,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        challenge TEXT NOT NULL,
        created_at REAL NOT NULL,
        verified_at REAL,
        PRIMARY KEY (domain, user_id)
    );
    CREATE UNIQUE INDEX domains_verified ON domains (domain) WHERE verified_at IS NOT NULL;
    -- What `relay serve` runs with, for admin commands that print it (the CNAME target).
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)
    """,
    # v4: sessions found by index, not by scanning: expiry (the purge timer), a user's newest (the
    # per-user cap), and a token's (revocation cascades).
    """
    CREATE INDEX sessions_expiry ON sessions (expires_at);
    CREATE INDEX sessions_user ON sessions (user_id, created_at);
    CREATE INDEX sessions_token ON sessions (token_id)
    """,
    # v5: shares. A share belongs to a host (an owned name's NAME.DOMAIN or a verified custom domain),
    # not to a live tunnel, so it survives reconnects; it goes with the name, the domain or a user.
    """
    CREATE TABLE shares (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        owner_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        user_id INTEGER REFERENCES users(id) ON DELETE CASCADE,
        created_at REAL NOT NULL,
        expires_at REAL
    );
    CREATE UNIQUE INDEX shares_user ON shares (host, user_id) WHERE kind = 'user';
    CREATE INDEX shares_with ON shares (user_id)
    """,
    # v6: a host made public is one 'public' share row.
    """
    CREATE UNIQUE INDEX shares_public ON shares (host) WHERE kind = 'public'
    """,
    # v7: share links and their guest sessions. A link keeps only its code's hash; a guest session
    # goes with its link (revoked: the row is deleted), and lasts no longer than it.
    """
    ALTER TABLE shares ADD COLUMN label TEXT;
    ALTER TABLE shares ADD COLUMN code_hash BLOB;
    ALTER TABLE shares ADD COLUMN uses INTEGER NOT NULL DEFAULT 0;
    CREATE UNIQUE INDEX shares_code ON shares (code_hash) WHERE code_hash IS NOT NULL;
    CREATE TABLE guest_sessions (
        hash BLOB PRIMARY KEY,
        share_id TEXT NOT NULL REFERENCES shares(id) ON DELETE CASCADE,
        host TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX guest_sessions_share ON guest_sessions (share_id, created_at);
    CREATE INDEX guest_sessions_expiry ON guest_sessions (expires_at)
    """,
    # v8: the audit log. No foreign keys: events outlive their users (a removed user's ids are
    # cleared, so a later user given the same id reads none of them).
    """
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        event TEXT NOT NULL,
        actor TEXT NOT NULL,
        host TEXT NOT NULL DEFAULT '',
        client TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT '{}',
        owner_id INTEGER,
        user_id INTEGER
    );
    CREATE INDEX audit_at ON audit (at);
    CREATE INDEX audit_owner ON audit (owner_id, at);
    CREATE INDEX audit_user ON audit (user_id, at)
    """,
    # v9: when each host last had a live tunnel, and from where (the offline page says so; it
    # survives restarts). Deleted with the name or the domain.
    """
    CREATE TABLE last_seen (
        host TEXT PRIMARY KEY,
        at REAL NOT NULL,
        client TEXT NOT NULL
    )
    """,
    # v10: the cluster (DESIGN §3.9). A live tunnel row is also its route: the node holding it.
    # Nodes heartbeat into ``nodes``; ``cluster_keys`` holds what every node must share (the SSH
    # host key, the node-to-node secret). A single SQLite node keeps these tables empty.
    """
    ALTER TABLE live_tunnels ADD COLUMN node TEXT NOT NULL DEFAULT '';
    CREATE TABLE nodes (
        name TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        incarnation TEXT NOT NULL,
        started_at REAL NOT NULL,
        heartbeat_at REAL NOT NULL,
        tunnels INTEGER NOT NULL DEFAULT 0,
        draining INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE cluster_keys (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        created_at REAL NOT NULL
    )
    """,
    # v11: a cluster's sign-in hand-off codes, so a code minted on one node is redeemed on any
    # (a single relay keeps them in memory). Code and state are kept hashed; one use each.
    """
    CREATE TABLE sso_codes (
        hash BLOB PRIMARY KEY,
        user_id INTEGER NOT NULL,
        credential TEXT NOT NULL,
        host TEXT NOT NULL,
        state_hash BLOB NOT NULL,
        guest TEXT NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX sso_codes_user ON sso_codes (user_id, expires_at)
    """,
)
#: The version a new PostgreSQL database starts at, and the script that creates it.
POSTGRES_BASE_VERSION = 9
POSTGRES_BASE = """
CREATE TABLE users (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    is_admin INTEGER NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    hash BYTEA NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION,
    last_used_at DOUBLE PRECISION
);
CREATE TABLE ssh_keys (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    fingerprint TEXT NOT NULL UNIQUE,
    public_key TEXT NOT NULL,
    comment TEXT NOT NULL DEFAULT '',
    created_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE names (
    name TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    claimed_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE sessions (
    hash BYTEA PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    host TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    token_id TEXT REFERENCES tokens(id) ON DELETE CASCADE
);
CREATE INDEX sessions_expiry ON sessions (expires_at);
CREATE INDEX sessions_user ON sessions (user_id, created_at);
CREATE INDEX sessions_token ON sessions (token_id);
CREATE TABLE live_tunnels (
    host TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL,
    client TEXT NOT NULL,
    since DOUBLE PRECISION NOT NULL,
    bytes_in BIGINT NOT NULL DEFAULT 0,
    bytes_out BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE domains (
    domain TEXT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    challenge TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    verified_at DOUBLE PRECISION,
    PRIMARY KEY (domain, user_id)
);
CREATE UNIQUE INDEX domains_verified ON domains (domain) WHERE verified_at IS NOT NULL;
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE shares (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    owner_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    user_id BIGINT REFERENCES users(id) ON DELETE CASCADE,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION,
    label TEXT,
    code_hash BYTEA,
    uses INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX shares_user ON shares (host, user_id) WHERE kind = 'user';
CREATE INDEX shares_with ON shares (user_id);
CREATE UNIQUE INDEX shares_public ON shares (host) WHERE kind = 'public';
CREATE UNIQUE INDEX shares_code ON shares (code_hash) WHERE code_hash IS NOT NULL;
CREATE TABLE guest_sessions (
    hash BYTEA PRIMARY KEY,
    share_id TEXT NOT NULL REFERENCES shares(id) ON DELETE CASCADE,
    host TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX guest_sessions_share ON guest_sessions (share_id, created_at);
CREATE INDEX guest_sessions_expiry ON guest_sessions (expires_at);
CREATE TABLE audit (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    event TEXT NOT NULL,
    actor TEXT NOT NULL,
    host TEXT NOT NULL DEFAULT '',
    client TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}',
    owner_id BIGINT,
    user_id BIGINT
);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_owner ON audit (owner_id, at);
CREATE INDEX audit_user ON audit (user_id, at);
CREATE TABLE last_seen (
    host TEXT PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    client TEXT NOT NULL
)
"""

#: Steps after the base, as (version, script); the same versions as SQLite's list.
POSTGRES_MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        10,
        """
        ALTER TABLE live_tunnels ADD COLUMN node TEXT NOT NULL DEFAULT '';
        CREATE INDEX live_tunnels_node ON live_tunnels (node);
        CREATE TABLE nodes (
            name TEXT PRIMARY KEY,
            address TEXT NOT NULL,
            incarnation TEXT NOT NULL,
            started_at DOUBLE PRECISION NOT NULL,
            heartbeat_at DOUBLE PRECISION NOT NULL,
            tunnels INTEGER NOT NULL DEFAULT 0,
            draining INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE cluster_keys (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL
        )
        """,
    ),
    (
        11,
        """
        CREATE TABLE sso_codes (
            hash BYTEA PRIMARY KEY,
            user_id BIGINT NOT NULL,
            credential TEXT NOT NULL,
            host TEXT NOT NULL,
            state_hash BYTEA NOT NULL,
            guest TEXT NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL
        );
        CREATE INDEX sso_codes_user ON sso_codes (user_id, expires_at)
        """,
    ),
)

#: The version this relay's code reads and writes.
SCHEMA_VERSION = len(SQLITE_MIGRATIONS)

#: Tables the store owns, parents before children (a copy inserts in this order). Identity columns
#: are named so that a copy can move the sequences past the ids it wrote.
TABLES: tuple[str, ...] = (
    "users",
    "tokens",
    "ssh_keys",
    "names",
    "sessions",
    "live_tunnels",
    "domains",
    "settings",
    "shares",
    "guest_sessions",
    "audit",
    "last_seen",
    "nodes",
    "cluster_keys",
    "sso_codes",
)
IDENTITY_TABLES: tuple[str, ...] = ("users", "ssh_keys", "audit")
