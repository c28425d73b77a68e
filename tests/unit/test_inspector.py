"""The live request inspector: what a row shows (never a secret), and how much it keeps."""

from __future__ import annotations

import pytest

from relay.inspector import MAX_PATH, Inspector, Row, line, shown_path, size


@pytest.mark.parametrize(
    ("path", "query", "shown"),
    [
        ("/lab", "", "/lab"),
        ("/api/contents", "type=notebook&page=2", "/api/contents?type=notebook&page=2"),
        ("/lab", "token=abc", "/lab?token=[redacted]"),
        (
            "/x",
            "api_key=1&Password=2&relay_token=3",
            "/x?api_key=[redacted]&Password=[redacted]&relay_token=[redacted]",
        ),
        ("/x", "next=rly_0123456789_secret", "/x?next=[redacted]"),
        ("/x", "v=" + "a" * 40, "/x?v=[redacted]"),  # long random values look like credentials
        ("/x", "jwt=eyJhbGciOi.payload.sig", "/x?jwt=[redacted]"),
        ("/x", "q=hello world", "/x?q=hello%20world"),
        ("/\x1b[31m", "", "/\\x1b[31m"),  # control characters escaped
        ("/\u202e", "", "/\\u202e"),
    ],
)
def test_shown_path(path: str, query: str, shown: str) -> None:
    assert shown_path(path, query) == shown


def test_shown_path_is_capped() -> None:
    assert len(shown_path("/" + "a" * 1000, "")) == MAX_PATH + 3


def _row(host: str = "lab.x", n: int = 0) -> Row:
    return Row(0.0, host, "GET", f"/{n}", 200, 12.3, 10, 3100, "alice", "1.2.3.4")


def test_rows_and_tunnels_are_bounded() -> None:
    inspector = Inspector(rows_per_tunnel=3, max_tunnels=2)
    for n in range(5):
        inspector.add(_row("a.x", n))
    assert [r.path for r in inspector.recent("a.x")] == ["/2", "/3", "/4"]
    inspector.add(_row("b.x"))
    inspector.add(_row("a.x", 9))  # a.x is the most recently active
    inspector.add(_row("c.x"))
    assert len(inspector) == 2 and inspector.recent("b.x") == [] and inspector.recent("a.x")[-1].path == "/9"


def test_watchers_see_the_hosts_they_want_until_they_stop() -> None:
    inspector, seen = Inspector(), list[str]()
    stop = inspector.watch(lambda host: host == "a.x", lambda row: seen.append(row.host))
    inspector.add(_row("a.x"))
    inspector.add(_row("b.x"))
    stop()
    inspector.add(_row("a.x"))
    assert seen == ["a.x"]


def test_a_failing_watcher_does_not_fail_the_request() -> None:
    inspector = Inspector()

    def broken(row: Row) -> None:
        raise RuntimeError("bug")

    inspector.watch(lambda host: True, broken)
    inspector.add(_row())
    assert len(inspector.recent("lab.x")) == 1


def test_the_text_line() -> None:
    assert line(Row(3723.0, "lab.x", "GET", "/lab/api/contents", 200, 12.4, 0, 3100, "alice", "")) == (
        "01:02:03 GET /lab/api/contents 200 12ms 3.1KB alice"
    )
    assert size(512) == "512B" and size(2_500_000) == "2.5MB"
