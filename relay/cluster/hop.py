"""The node-to-node request's preamble: who sends it, for which host, signed with the cluster secret.

A node that reached a visitor's request for a host another node holds opens a TCP connection to that
node's cluster address and sends one line before any byte of the request:

    RELAY-HOP/1 ORIGIN TARGET HOST AT NONCE MAC

``MAC`` is HMAC-SHA256 of the other fields under the cluster's secret (which only the store holds,
so a visitor can neither reach nor forge it). The target answers ``OK`` and from then on the
connection is the tunnel's channel, or ``NO REASON`` and closes. A preamble is refused when its MAC
is wrong, when it is for another node, when its time is more than :data:`MAX_SKEW` away, when its
nonce was seen (a replay), and when it comes from the target itself (no loops). These are pure
functions with table tests; :mod:`.link` does the I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass

from ..names import is_valid_hostname, is_valid_label

MAGIC = "RELAY-HOP/1"
#: Longest preamble line a node reads (a hostname is at most 253 bytes).
MAX_LINE = 512
#: Seconds a preamble's time may differ from the receiver's clock (and how long nonces are kept).
MAX_SKEW = 30.0
OK = b"OK\n"


@dataclass(frozen=True)
class Hop:
    origin: str  # the node that reached the visitor
    target: str  # the node that holds the tunnel
    host: str
    at: float
    nonce: str


def _mac(secret: bytes, hop: Hop) -> str:
    text = f"{MAGIC} {hop.origin} {hop.target} {hop.host} {hop.at:.3f} {hop.nonce}"
    return hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()


def new_hop(origin: str, target: str, host: str, at: float) -> Hop:
    return Hop(origin, target, host, round(at, 3), secrets.token_hex(16))


def preamble(secret: bytes, hop: Hop) -> bytes:
    fields = f"{MAGIC} {hop.origin} {hop.target} {hop.host} {hop.at:.3f} {hop.nonce}"
    return f"{fields} {_mac(secret, hop)}\n".encode()


class Nonces:
    """Nonces seen in the last :data:`MAX_SKEW` seconds (older preambles are refused as stale, so
    forgetting their nonces lets nothing replay), bounded in number."""

    def __init__(self, most: int = 100_000) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._most = most

    def first(self, nonce: str, now: float) -> bool:
        while self._seen and (
            len(self._seen) >= self._most or next(iter(self._seen.values())) < now - 2 * MAX_SKEW
        ):
            self._seen.popitem(last=False)
        if nonce in self._seen:
            return False
        self._seen[nonce] = now
        return True


def check(line: bytes, secret: bytes, *, me: str, now: float, nonces: Nonces) -> Hop | str:
    """The hop ``line`` asks for, or why it is refused (a short reason, logged and answered)."""
    if len(line) > MAX_LINE or not line.endswith(b"\n"):
        return "malformed preamble"
    try:
        parts = line[:-1].decode("ascii").split(" ")
    except UnicodeDecodeError:
        return "malformed preamble"
    if len(parts) != 7 or parts[0] != MAGIC:
        return "not a relay hop"
    _, origin, target, host, at_text, nonce, mac = parts
    try:
        at = float(at_text)
    except ValueError:
        return "malformed preamble"
    if (
        not (is_valid_label(origin) and is_valid_label(target) and is_valid_hostname(host))
        or len(nonce) != 32
    ):
        return "malformed preamble"
    hop = Hop(origin, target, host, at, nonce)
    if not hmac.compare_digest(mac, _mac(secret, hop)):
        return "wrong signature"
    if target != me:
        return f"meant for node {target}"
    if origin == me:
        return "a hop from this node to itself"
    if abs(now - at) > MAX_SKEW:
        return "stale (clocks more than 30 s apart, or a replay)"
    if not nonces.first(nonce, now):
        return "replayed"
    return hop
