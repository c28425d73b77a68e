"""The shapes of the store's secrets: tokens, session ids, and the hash each is kept as.

Secrets (tokens, session ids, link codes) are stored only as SHA-256 hashes: they are 256-bit random
values, so a fast hash is enough and a leaked database yields nothing usable.
"""

from __future__ import annotations

import hashlib
import secrets

TOKEN_PREFIX = "rly_"


def new_session_id() -> str:
    """A session id (the cookie's value); only its hash is stored."""
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def split_token(token: str) -> tuple[str, str] | None:
    """``rly_<10 hex id>_<secret>`` → (public id, secret); None if it is not shaped like a token."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    rest = token[len(TOKEN_PREFIX) :]
    token_id, sep, secret = rest.partition("_")
    if not sep or len(token_id) != 10 or not secret:
        return None
    try:
        int(token_id, 16)
    except ValueError:
        return None
    return TOKEN_PREFIX + token_id, secret
