"""Per-connection bounds on the SSH side: kept notices, quoted client text, log lines."""

from __future__ import annotations

import pytest

from relay.ssh.notices import LogBudget, Notices, excerpt


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("short", 64, "short"),
        ("x" * 64, 64, "x" * 64),
        ("x" * 65, 64, "x" * 53 + "…(65 chars)"),
        ("x" * 30, 12, "x" * 12),  # too short a limit for the mark: a plain cut
        ("", 8, ""),
    ],
)
def test_excerpt_cuts_and_says_so(text: str, limit: int, expected: str) -> None:
    assert excerpt(text, limit) == expected and len(expected) <= limit


def test_notices_keep_the_newest_within_the_count_and_count_the_rest() -> None:
    notices = Notices(max_count=3, max_chars=1000)
    for n in range(10):
        notices.add(f"n{n}")
    assert notices.lines() == ["(7 older notices dropped)", "n7", "n8", "n9"]


def test_notices_keep_within_the_size_budget() -> None:
    notices = Notices(max_count=100, max_chars=100)
    notices.add("a" * 60)
    notices.add("b" * 60)  # pushes the first out
    assert notices.lines() == ["(1 older notices dropped)", "b" * 60]
    kept = notices.add("c" * 500)  # alone over budget: cut, and everything older dropped
    assert len(kept) <= 100 and notices.lines()[1:] == [kept] and notices.dropped == 2


def test_notices_without_drops_have_no_header() -> None:
    notices = Notices()
    notices.add("one")
    assert notices.lines() == ["one"] and len(notices) == 1


def test_log_budget_allows_a_burst_then_a_rate_and_reports_what_it_suppressed() -> None:
    now = [0.0]
    budget = LogBudget(burst=3, rate=1.0, clock=lambda: now[0])
    assert [budget.allow() for _ in range(5)] == [0, 0, 0, None, None]
    now[0] += 1.0
    assert budget.allow() == 2  # one token back; says two lines were dropped
    assert budget.allow() is None
    now[0] += 100
    assert [budget.allow() for _ in range(4)] == [1, 0, 0, None]  # refilled to the burst, no more
