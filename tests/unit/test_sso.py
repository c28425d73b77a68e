"""Single sign-on hand-off codes: single-use, bound to one host, short-lived."""

from __future__ import annotations

from relay.protocol import SSO_CODE_TTL
from relay.sso import SsoCodes


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def test_code_redeems_once_for_its_host() -> None:
    codes = SsoCodes(clock=FakeClock())
    code = codes.issue(7, "lab.localhost")
    assert codes.redeem(code, "lab.localhost") == (7, "")
    assert codes.redeem(code, "lab.localhost") is None


def test_code_is_bound_to_its_host_and_spent_by_a_wrong_try() -> None:
    codes = SsoCodes(clock=FakeClock())
    code = codes.issue(7, "lab.localhost")
    assert codes.redeem(code, "evil.localhost") is None
    assert codes.redeem(code, "lab.localhost") is None


def test_unknown_code() -> None:
    codes = SsoCodes(clock=FakeClock())
    codes.issue(1, "a.localhost")
    assert codes.redeem("not-a-code", "a.localhost") is None
    assert codes.redeem("", "a.localhost") is None


def test_code_expires() -> None:
    clock = FakeClock()
    codes = SsoCodes(ttl=60.0, clock=clock)
    early = codes.issue(1, "a.localhost")
    late = codes.issue(1, "a.localhost")
    clock.now += 59.9
    assert codes.redeem(early, "a.localhost") == (1, "")
    clock.now += 0.1
    assert codes.redeem(late, "a.localhost") is None


def test_default_ttl_is_the_protocol_value() -> None:
    clock = FakeClock()
    codes = SsoCodes(clock=clock)
    code = codes.issue(3, "a.localhost")
    clock.now += SSO_CODE_TTL
    assert codes.redeem(code, "a.localhost") is None


def test_codes_are_unique_and_unguessable_looking() -> None:
    codes = SsoCodes(clock=FakeClock())
    issued = {codes.issue(1, "a.localhost") for _ in range(200)}
    assert len(issued) == 200
    assert all(len(c) >= 32 for c in issued)


def test_table_is_bounded_dropping_expired_then_oldest() -> None:
    clock = FakeClock()
    codes = SsoCodes(ttl=10.0, clock=clock, max_codes=2)
    first = codes.issue(1, "a.localhost")
    second = codes.issue(2, "a.localhost")
    third = codes.issue(3, "a.localhost")  # full, nothing expired: the oldest goes
    assert codes.redeem(first, "a.localhost") is None
    assert codes.redeem(second, "a.localhost") == (2, "")
    assert codes.redeem(third, "a.localhost") == (3, "")
