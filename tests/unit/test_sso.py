"""Single sign-on hand-off codes: single-use, bound to one host, short-lived."""

from __future__ import annotations

import pytest

from relay.errors import TooManyRequests
from relay.protocol import SSO_CODE_TTL
from relay.sso import Grant, SsoCodes

ST = "state-of-this-browser"


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def _who(grant: Grant | None) -> tuple[int, str] | None:
    return None if grant is None else (grant.user_id, grant.credential)


def test_code_redeems_once_for_its_host() -> None:
    codes = SsoCodes(clock=FakeClock())
    code = codes.issue(7, "lab.localhost", state=ST)
    assert _who(codes.redeem(code, "lab.localhost", ST)) == (7, "")
    assert codes.redeem(code, "lab.localhost", ST) is None


def test_code_is_bound_to_its_host_and_spent_by_a_wrong_try() -> None:
    codes = SsoCodes(clock=FakeClock())
    code = codes.issue(7, "lab.localhost", state=ST)
    assert codes.redeem(code, "evil.localhost", ST) is None
    assert codes.redeem(code, "lab.localhost", ST) is None


def test_unknown_code() -> None:
    codes = SsoCodes(clock=FakeClock())
    codes.issue(1, "a.localhost", state=ST)
    assert codes.redeem("not-a-code", "a.localhost", ST) is None
    assert codes.redeem("", "a.localhost", ST) is None


def test_code_expires() -> None:
    clock = FakeClock()
    codes = SsoCodes(ttl=60.0, clock=clock)
    early = codes.issue(1, "a.localhost", state=ST)
    late = codes.issue(1, "a.localhost", state=ST)
    clock.now += 59.9
    assert _who(codes.redeem(early, "a.localhost", ST)) == (1, "")
    clock.now += 0.1
    assert codes.redeem(late, "a.localhost", ST) is None


def test_default_ttl_is_the_protocol_value() -> None:
    clock = FakeClock()
    codes = SsoCodes(clock=clock)
    code = codes.issue(3, "a.localhost", state=ST)
    clock.now += SSO_CODE_TTL
    assert codes.redeem(code, "a.localhost", ST) is None


def test_codes_are_unique_and_unguessable_looking() -> None:
    codes = SsoCodes(clock=FakeClock())
    issued = {codes.issue(n % 50, "a.localhost", state=ST) for n in range(200)}
    assert len(issued) == 200
    assert all(len(c) >= 32 for c in issued)


def test_table_is_bounded_dropping_expired_then_oldest() -> None:
    clock = FakeClock()
    codes = SsoCodes(ttl=10.0, clock=clock, max_codes=2)
    first = codes.issue(1, "a.localhost", state=ST)
    second = codes.issue(2, "a.localhost", state=ST)
    third = codes.issue(3, "a.localhost", state=ST)  # full, nothing expired: the oldest goes
    assert codes.redeem(first, "a.localhost", ST) is None
    assert _who(codes.redeem(second, "a.localhost", ST)) == (2, "")
    assert _who(codes.redeem(third, "a.localhost", ST)) == (3, "")


def test_expired_codes_leave_from_the_front_and_free_their_users_share() -> None:
    clock = FakeClock()
    codes = SsoCodes(ttl=10.0, clock=clock, max_codes=1000, max_per_user=3)
    for _ in range(3):
        codes.issue(1, "a.localhost", state=ST)
    assert codes.outstanding(1) == 3
    clock.now += 10
    codes.issue(2, "b.localhost", state=ST)  # issuing expires what is due, from the front
    assert len(codes) == 1 and codes.outstanding(1) == 0 and codes.outstanding(2) == 1


def test_one_users_sign_in_storm_is_refused_and_leaves_other_users_codes_alone() -> None:
    clock = FakeClock()
    codes = SsoCodes(ttl=60.0, clock=clock, max_codes=50, max_per_user=5)
    bobs = codes.issue(2, "bob.localhost", state=ST)
    for _ in range(5):
        codes.issue(1, "a.localhost", state=ST)
    for _ in range(1000):
        with pytest.raises(TooManyRequests) as info:
            codes.issue(1, "a.localhost", state=ST)
    assert info.value.retry_after == 60
    assert _who(codes.redeem(bobs, "bob.localhost", ST)) == (2, "")
    assert len(codes) == 5


def test_redeeming_frees_the_users_share() -> None:
    codes = SsoCodes(clock=FakeClock(), max_per_user=1)
    code = codes.issue(1, "a.localhost", state=ST)
    assert codes.redeem(code, "other.localhost", ST) is None  # spent, even by a wrong try
    assert codes.outstanding(1) == 0
    codes.issue(1, "a.localhost", state=ST)


def test_a_full_table_drops_the_oldest_one_by_one_and_expiry_takes_exactly_the_due() -> None:
    clock = FakeClock()
    codes = SsoCodes(ttl=1.0, clock=clock, max_codes=100_000, max_per_user=10**9)
    for n in range(100_000):
        codes.issue(n, "a.localhost", state=ST)
    clock.now += 0.5
    for n in range(1000):
        codes.issue(n, "a.localhost", state=ST)  # full: the oldest goes, one by one
    assert len(codes) == 100_000
    clock.now += 0.6  # the first 99 000 expire
    codes.issue(7, "a.localhost", state=ST)
    assert len(codes) == 1001


def test_a_code_redeems_only_with_the_state_of_the_browser_that_started() -> None:
    codes = SsoCodes(clock=FakeClock())
    code = codes.issue(7, "lab.localhost", state=ST)
    assert codes.redeem(code, "lab.localhost", "another-browsers-state") is None
    assert codes.redeem(code, "lab.localhost", ST) is None  # spent by the wrong try
    code = codes.issue(7, "lab.localhost", state=ST)
    assert codes.redeem(code, "lab.localhost", "") is None  # no state cookie at all
