"""The node-to-node preamble: only a fresh, signed hop meant for this node, from another, passes."""

from __future__ import annotations

import pytest

from relay.cluster.hop import MAX_LINE, Hop, Nonces, check, new_hop, preamble

SECRET = b"s" * 32
NOW = 1_800_000_000.0


def _line(hop: Hop, secret: bytes = SECRET) -> bytes:
    return preamble(secret, hop)


def test_a_signed_fresh_hop_for_this_node_passes_once() -> None:
    hop = new_hop("n2", "n1", "lab.relay.example.com", NOW)
    nonces = Nonces()
    assert check(_line(hop), SECRET, me="n1", now=NOW + 1, nonces=nonces) == hop
    assert check(_line(hop), SECRET, me="n1", now=NOW + 2, nonces=nonces) == "replayed"


@pytest.mark.parametrize(
    ("line", "me", "now", "why"),
    [
        (_line(new_hop("n2", "n1", "lab.x", NOW), b"w" * 32), "n1", NOW, "wrong signature"),
        (_line(new_hop("n2", "n3", "lab.x", NOW)), "n1", NOW, "meant for node n3"),
        (_line(new_hop("n1", "n1", "lab.x", NOW)), "n1", NOW, "a hop from this node to itself"),
        (
            _line(new_hop("n2", "n1", "lab.x", NOW)),
            "n1",
            NOW + 31,
            "stale (clocks more than 30 s apart, or a replay)",
        ),
        (
            _line(new_hop("n2", "n1", "lab.x", NOW)),
            "n1",
            NOW - 31,
            "stale (clocks more than 30 s apart, or a replay)",
        ),
        (b"GET / HTTP/1.1\r\n", "n1", NOW, "not a relay hop"),
        (b"RELAY-HOP/1 n2 n1 lab.x 1 abc\n", "n1", NOW, "not a relay hop"),
        (b"RELAY-HOP/1 n2 n1 lab.x x " + b"a" * 32 + b" mac\n", "n1", NOW, "malformed preamble"),
        (b"RELAY-HOP/1 N2 n1 lab.x 1.0 " + b"a" * 32 + b" mac\n", "n1", NOW, "malformed preamble"),
        (b"RELAY-HOP/1 n2 n1 lab.x 1.0 short mac\n", "n1", NOW, "malformed preamble"),
        (b"RELAY-HOP/1 n2 n1 l\xc3\xa9.x 1.0 " + b"a" * 32 + b" mac\n", "n1", NOW, "malformed preamble"),
        (_line(new_hop("n2", "n1", "lab.x", NOW))[:-1], "n1", NOW, "malformed preamble"),  # no newline
        (b"RELAY-HOP/1 " + b"a" * MAX_LINE + b"\n", "n1", NOW, "malformed preamble"),
    ],
)
def test_refused_hops_say_why(line: bytes, me: str, now: float, why: str) -> None:
    assert check(line, SECRET, me=me, now=now, nonces=Nonces()) == why


def test_a_changed_field_breaks_the_signature() -> None:
    hop = new_hop("n2", "n1", "lab.x", NOW)
    forged = _line(hop).replace(b" lab.x ", b" bob.x ")
    assert check(forged, SECRET, me="n1", now=NOW, nonces=Nonces()) == "wrong signature"


def test_nonces_are_forgotten_only_once_their_hops_are_stale() -> None:
    nonces = Nonces(most=3)
    assert nonces.first("a", NOW) and not nonces.first("a", NOW + 59)
    assert nonces.first("b", NOW + 61)  # "a" has aged out: a replay of it is refused as stale anyway
    for name in "cdef":
        assert nonces.first(name, NOW + 62)  # bounded: the oldest go first
