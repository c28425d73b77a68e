"""Log lines: one per event, client text escaped and capped, token-shaped text redacted."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.logfmt import MAX_FIELD, emit, escape, line


def test_plain_values_stay_bare_and_others_are_quoted() -> None:
    assert line("http.request", host="lab.localhost", status=200, ms="1.5") == (
        "event=http.request host=lab.localhost status=200 ms=1.5"
    )
    assert escape("a b") == '"a b"'
    assert escape("") == '""'
    assert escape('say "hi"') == '"say \\"hi\\""'


def test_none_fields_are_left_out() -> None:
    assert line("x", a=None, b=1) == "event=x b=1"


def test_control_and_bidi_characters_are_escaped() -> None:
    forged = "alice\nevent=http.request status=200\x1b[2J\u202e"
    out = escape(forged)
    assert "\n" not in out and "\x1b" not in out and "\u202e" not in out
    assert out == '"alice\\nevent=http.request status=200\\x1b[2J\\u202e"'


def test_values_are_capped() -> None:
    out = escape("a" * 10_000)
    assert out == "a" * MAX_FIELD + "..."


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("rly_0123456789_SECRETsecretSECRETsecret-_x", "SECRETsecret"),
        ("/path/rly_abcdef0123_s3cr3t/more", "s3cr3t"),
        ("user rly_0123456789_hunter2 pasted", "hunter2"),
    ],
)
def test_token_shaped_text_is_redacted(text: str, secret: str) -> None:
    out = escape(text)
    assert "rly_[redacted]" in out
    assert secret not in out


@given(st.text(max_size=400))
def test_any_value_makes_one_printable_ascii_line_that_cannot_start_a_field(value: str) -> None:
    out = escape(value)
    assert out.isascii() and out.isprintable()
    assert "\n" not in out and "\r" not in out
    # Either one bare token, or one quoted string whose inner quotes are all escaped.
    if out.startswith('"'):
        inner = out[1:-1]
        assert out.endswith('"') and '"' not in inner.replace('\\"', "")
    else:
        assert " " not in out and '"' not in out


def test_emit_writes_one_line_only_when_enabled(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("relay.test_logfmt")
    with caplog.at_level(logging.WARNING, logger="relay.test_logfmt"):
        emit(logger, logging.INFO, "quiet", a=1)
        emit(logger, logging.WARNING, "loud", path="/x y")
    assert [r.getMessage() for r in caplog.records] == ['event=loud path="/x y"']
