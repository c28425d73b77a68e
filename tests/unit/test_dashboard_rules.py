"""The dashboard's decisions: who manages a host, and the CSRF token bound to one session."""

from __future__ import annotations

import pytest

from relay.dashboard.rules import csrf_ok, csrf_token, may_manage


@pytest.mark.parametrize(
    ("caller", "owner", "admin", "allowed"),
    [
        (1, 1, False, True),
        (2, 1, False, False),
        (2, None, False, False),
        (9, 1, True, True),
        (9, None, True, True),
    ],
)
def test_may_manage(caller: int, owner: int | None, admin: bool, allowed: bool) -> None:
    assert may_manage(caller_id=caller, owner_id=owner, admin=admin) is allowed


def test_a_csrf_token_belongs_to_one_session_and_one_relay() -> None:
    mine = csrf_token(b"k" * 32, "session-a")
    assert csrf_ok(mine, csrf_token(b"k" * 32, "session-a"))
    assert not csrf_ok(mine, csrf_token(b"k" * 32, "session-b"))  # another session's
    assert not csrf_ok(mine, csrf_token(b"j" * 32, "session-a"))  # another process's secret
    assert not csrf_ok("", mine) and not csrf_ok(mine, "")
