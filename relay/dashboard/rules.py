"""Dashboard decisions, pure: who may see or change a host, and the CSRF check."""

from __future__ import annotations

import hashlib
import hmac


def may_manage(*, caller_id: int, owner_id: int | None, admin: bool) -> bool:
    """A tunnel's inspector, shares, links and audit: its owner's, and every admin's."""
    return admin or (owner_id is not None and owner_id == caller_id)


def csrf_token(secret: bytes, session_hash: str) -> str:
    """The CSRF token of one relay-host session (bound to it: another session's token fails)."""
    return hmac.new(secret, b"csrf " + session_hash.encode(), hashlib.sha256).hexdigest()


def csrf_ok(sent: str, expected: str) -> bool:
    return bool(sent) and bool(expected) and hmac.compare_digest(sent.encode(), expected.encode())
