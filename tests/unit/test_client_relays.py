"""relay-client --relay a,b,c: a cluster's nodes, tried in turn."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.config import ClientError
from client.connect import TunnelSpec
from client.settings import build_spec


def _built(directory: Path, relay: str) -> TunnelSpec:
    return build_spec(
        directory, relay=relay, token="t", user="u", name=None, domain=None, port=8000, lab=False,
        host_key=None, key=None,
    )  # fmt: skip


def _spec(*addresses: tuple[str, int]) -> TunnelSpec:
    (host, port), *others = addresses
    return TunnelSpec(relay_host=host, relay_port=port, user="u", local_port=1, others=tuple(others))


def test_the_next_address_comes_round_in_order() -> None:
    spec = _spec(("a", 2222), ("b", 2222), ("c", 2223))
    seen = [spec.relay]
    for _ in range(3):
        assert spec.next_address()
        seen.append(spec.relay)
    assert seen == ["a:2222", "b:2222", "c:2223", "a:2222"]


def test_one_address_stays() -> None:
    spec = _spec(("relay.example.com", 2222))
    assert not spec.next_address() and spec.relay == "relay.example.com:2222"


@pytest.mark.parametrize(
    ("value", "first", "others"),
    [
        ("a,b:2223,[::1]:2224", ("a", 2222), (("b", 2223), ("::1", 2224))),
        ("a, b", ("a", 2222), (("b", 2222),)),
        ("a,", ("a", 2222), ()),
    ],
)
def test_a_list_of_relays_is_parsed(
    tmp_path: Path, value: str, first: tuple[str, int], others: tuple[tuple[str, int], ...]
) -> None:
    spec = _built(tmp_path, value)
    assert (spec.relay_host, spec.relay_port) == first and spec.others == others


def test_a_bad_address_in_the_list_is_named(tmp_path: Path) -> None:
    with pytest.raises(ClientError, match="b:x"):
        _built(tmp_path, "a,b:x")
