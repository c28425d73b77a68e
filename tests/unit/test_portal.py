"""Query rewriting for the ``?relay_token=`` exchange: the token goes, everything else stays as sent."""

from __future__ import annotations

import pytest

from relay.protocol import TOKEN_QUERY
from relay.rewrite import without_param


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("relay_token=abc", ""),
        ("a=1&relay_token=abc&b=2", "a=1&b=2"),
        ("relay_token=abc&x=%2F%20y+z&y=", "x=%2F%20y+z&y="),
        ("q=caf%C3%A9&relay_token=t&Q=A%2bB&flag", "q=caf%C3%A9&Q=A%2bB&flag"),
        ("relay_token=1&relay_token=2&keep=3", "keep=3"),
        ("relay%5Ftoken=abc&keep=1", "keep=1"),  # percent-encoded name
        ("relay_token&keep=1", "keep=1"),  # no value
        ("relay_tokenx=1&xrelay_token=2&RELAY_TOKEN=3", "relay_tokenx=1&xrelay_token=2&RELAY_TOKEN=3"),
        ("next=%2Flab%3Frelay_token%3Dx", "next=%2Flab%3Frelay_token%3Dx"),  # only a whole name counts
        ("", ""),
    ],
)
def test_without_param(query: str, expected: str) -> None:
    assert without_param(query, TOKEN_QUERY) == expected


def test_without_param_keeps_order_and_bytes_of_the_rest() -> None:
    rest = ["z=1", "a=%zz", "m=a;b", "k=%E2%9C%93", "e=", "=v"]
    query = "&".join([rest[0], f"{TOKEN_QUERY}=secret", *rest[1:]])
    out = without_param(query, TOKEN_QUERY)
    assert out == "&".join(rest)
    assert "secret" not in out


def test_query_params_never_raise_on_many_fields() -> None:
    from relay.rewrite import query_params

    query = "&".join(f"k{i}=v{i}" for i in range(500)) + "&relay_token=abc&k1=second"
    params = query_params(query)
    assert params["relay_token"] == "abc"
    assert params["k1"] == "v1"
    assert len(params) == 501
