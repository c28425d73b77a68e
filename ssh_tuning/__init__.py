"""asyncssh's per-packet overheads, removed on the relay's own SSH connections and on relay-client's
(DESIGN §5). One module for both sides, its own top-level package: relay/ and client/ never import
each other, and the relay serves this package inside relay-client's wheel.

Moving a small request through asyncssh costs several times what OpenSSH spends, and none of it is
the crypto. Per data packet asyncssh (2.21–2.24):

1. sends an ``SSH_MSG_IGNORE`` packet first — a countermeasure against the CBC-mode IV attack that
   AEAD ciphers do not need (OpenSSH sends none); it doubles packets, ``send()`` calls and the peer's
   work. It is dropped whenever the negotiated cipher is an AEAD one (the relay and relay-client
   offer only AES-GCM);
2. builds a new ``AESGCM`` object for each packet, in both directions: one object per key is kept
   once the key has handled ``KEEP_AFTER`` packets (so idle tunnels keep their memory);
3. formats a packet-log message (names, plurals, f-strings) before checking that nobody logs it;
4. cancels and re-arms the keepalive timer for each chunk it receives: the timer now re-arms itself
   for the remainder when it fires early;
5. writes each packet with its own ``send()``: the hot packets (channel data and window adjusts) of
   one event-loop pass leave in one ``writelines`` (at once when 64 KiB are queued: a bulk stream is
   not held back); every other packet flushes what is queued and goes out at once, so a disconnect
   is never held back.

Each item needs asyncssh internals the library does not expose, so they live here, applied per
connection (its class swapped for a subclass with the overrides; asyncssh's own classes are never
patched, so other asyncssh users in the process are untouched), and ``tests/unit/test_ssh_tuning.py``
fails loudly when asyncssh changes under them. When a needed attribute is missing the connection runs
untuned (correct, slower) and one warning is logged.
Items 1, 2, 3 and 5 belong upstream; ``RELAY_SSH_TUNING=off`` turns this module off (the e2e suite
runs both ways).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Callable
from typing import Any

import asyncssh
from asyncssh.constants import (
    MSG_CHANNEL_DATA,
    MSG_CHANNEL_EXTENDED_DATA,
    MSG_CHANNEL_WINDOW_ADJUST,
    MSG_IGNORE,
)
from asyncssh.crypto.cipher import GCMCipher
from asyncssh.encryption import ChachaEncryption, GCMEncryption
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger(__name__)

#: asyncssh releases this module was written against (major.minor); pyproject pins the same range.
TESTED_VERSIONS = ("2.21", "2.22", "2.23", "2.24")
#: Environment switch: ``off`` runs asyncssh as shipped (for A/B runs and the e2e suite's second pass).
ENV_SWITCH = "RELAY_SSH_TUNING"

#: Connection attributes the tuning reads or replaces; checked before anything is changed.
_CONN_ATTRS = (
    "send_packet",
    "_send",
    "_transport",
    "_send_encryption",
    "_recv_encryption",
    "_auth_complete",
    "_keepalive_timer",
    "_keepalive_interval",
    "_set_keepalive_timer",
    "_reset_keepalive_timer",
    "_keepalive_timer_callback",
    "log_sent_packet",
    "log_received_packet",
)
#: Packets that may wait for the end of the event-loop pass (the data path's own).
_HOT = frozenset({MSG_CHANNEL_DATA, MSG_CHANNEL_EXTENDED_DATA, MSG_CHANNEL_WINDOW_ADJUST})
#: Queued bytes at which the queue is written at once: batching is for the small packets of many
#: requests in one pass; a bulk stream held until the end of the pass leaves in one burst that
#: overruns the socket buffer and stalls its sender (relay-client's downloads ran at 0.69x).
FLUSH_AT = 64 * 1024

_warned = False


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "on").lower() not in ("off", "0", "no", "false")


def missing_internals(conn: object) -> list[str]:
    """What this asyncssh lacks of the internals the tuning needs (empty: all there)."""
    return [name for name in _CONN_ATTRS if not hasattr(conn, name)] + _missing_in_gcm()


@functools.cache
def _missing_in_gcm() -> list[str]:
    # Once per process: the cipher class does not change between connections.
    probe = GCMCipher("aes128-gcm", b"\0" * 16, b"\0" * 12)
    return [f"GCMCipher.{name}" for name in ("_key", "_iv") if not hasattr(probe, name)]


#: Packets a key handles before it gets a kept AESGCM object. An OpenSSL context costs ~2.5 KiB, two
#: per connection: an idle tunnel (a few dozen packets of set-up and keepalives) never pays for them.
KEEP_AFTER = 64


class _KeptGCM:
    """``GCMCipher`` with one AESGCM object per key once the key is busy, and the invocation counter
    kept as an int."""

    __slots__ = ("_aead", "_counter", "_fixed", "_key", "_uses")

    def __init__(self, original: GCMCipher) -> None:
        self._key: bytes = original._key
        self._aead: AESGCM | None = None
        self._uses = 0
        iv: bytes = original._iv
        self._fixed = iv[:4]
        self._counter = int.from_bytes(iv[4:], "big")

    def _cipher(self) -> AESGCM:
        if self._aead is not None:
            return self._aead
        self._uses += 1
        if self._uses < KEEP_AFTER:
            return AESGCM(self._key)
        self._aead = AESGCM(self._key)
        return self._aead

    def _next_iv(self) -> bytes:
        iv = self._fixed + self._counter.to_bytes(8, "big")
        self._counter = (self._counter + 1) & 0xFFFFFFFFFFFFFFFF
        return iv

    def encrypt_and_sign(self, header: bytes, data: bytes) -> tuple[bytes, bytes]:
        sealed = self._cipher().encrypt(self._next_iv(), data, header)
        return header + sealed[:-16], sealed[-16:]

    def verify_and_decrypt(self, header: bytes, data: bytes, mac: bytes) -> bytes | None:
        try:
            return self._cipher().decrypt(self._next_iv(), data + mac, header)
        except Exception:  # cryptography's InvalidTag: asyncssh turns None into a MAC error
            return None


def _keep_gcm(encryption: object) -> None:
    if isinstance(encryption, GCMEncryption):
        cipher = encryption._cipher
        if isinstance(cipher, GCMCipher):
            encryption._cipher = _KeptGCM(cipher)  # type: ignore[assignment]


class _State:
    """What the tuning keeps per connection: one attribute on it (``_relay_tuning``)."""

    __slots__ = (
        "aead", "hot", "last_rx", "packet_log", "queue", "queued", "recv_encryption", "send_encryption"
    )  # fmt: skip

    def __init__(self, packet_log: bool) -> None:
        self.queue: list[bytes] = []
        self.queued = 0  # bytes in ``queue``
        self.hot = False  # the packet being sent may wait for the end of the loop pass
        self.last_rx = 0.0
        self.send_encryption: object = None
        self.recv_encryption: object = None
        self.aead = False  # the send cipher authenticates each packet itself (no CBC-era IGNOREs)
        self.packet_log = packet_log


class _Tuned:
    """Overrides for one connection, mixed in front of its asyncssh class.

    The connection's class is swapped for ``(_Tuned, its class)`` rather than bound methods set on
    the instance: the overrides are plain method calls, and the connection carries one attribute more
    (``_relay_tuning``), not six bound-method objects."""

    _relay_tuning: _State
    _send_encryption: Any
    _recv_encryption: Any
    _transport: Any
    _loop: asyncio.AbstractEventLoop
    _auth_complete: bool
    _keepalive_timer: asyncio.TimerHandle | None
    _keepalive_interval: float
    _set_keepalive_timer: Callable[[], None]

    def send_packet(self, pkttype: int, *args: bytes, handler: Any = None) -> None:
        state = self._relay_tuning
        if self._send_encryption is not state.send_encryption:  # new keys (first kex or a rekey)
            state.send_encryption = self._send_encryption
            state.aead = isinstance(state.send_encryption, (GCMEncryption, ChachaEncryption))
            _keep_gcm(state.send_encryption)
        if pkttype == MSG_IGNORE and state.aead:
            # The relay itself never sends one: this is asyncssh's CBC countermeasure.
            return
        if self._recv_encryption is not state.recv_encryption:
            state.recv_encryption = self._recv_encryption
            _keep_gcm(state.recv_encryption)
        outer, state.hot = state.hot, pkttype in _HOT
        try:
            super().send_packet(pkttype, *args, handler=handler)  # type: ignore[misc]
        finally:
            state.hot = outer

    def _send(self, data: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        state = self._relay_tuning
        if state.hot:
            if not state.queue:
                # FIFO: this runs before any abort asyncssh schedules after queueing more packets.
                self._loop.call_soon(_flush, state, transport)
            state.queue.append(data)
            state.queued += len(data)
            if state.queued >= FLUSH_AT:
                _flush(state, transport)
            return
        if state.queue:
            _flush(state, transport)
        try:  # noqa: SIM105 - on the hot path, cheaper than contextlib.suppress
            transport.write(data)
        except ConnectionError:
            pass

    def _reset_keepalive_timer(self) -> None:
        if self._auth_complete:
            self._relay_tuning.last_rx = self._loop.time()
            if self._keepalive_timer is None:
                self._set_keepalive_timer()

    def _keepalive_timer_callback(self) -> None:
        interval = self._keepalive_interval
        quiet = self._loop.time() - self._relay_tuning.last_rx
        if interval and quiet < interval:
            # Data arrived since the timer was set: wait out the rest of the interval.
            self._keepalive_timer = self._loop.call_later(interval - quiet, self._keepalive_timer_callback)
            return
        super()._keepalive_timer_callback()  # type: ignore[misc]

    def log_sent_packet(self, *args: Any, **kwargs: Any) -> None:
        if self._relay_tuning.packet_log:
            super().log_sent_packet(*args, **kwargs)  # type: ignore[misc]

    def log_received_packet(self, *args: Any, **kwargs: Any) -> None:
        if self._relay_tuning.packet_log:
            super().log_received_packet(*args, **kwargs)  # type: ignore[misc]


def _flush(state: _State, transport: Any) -> None:
    queue, state.queue, state.queued = state.queue, [], 0
    if queue:
        try:  # noqa: SIM105 - on the hot path, cheaper than contextlib.suppress
            transport.writelines(queue)
        except ConnectionError:
            pass


_tuned_classes: dict[type, type] = {}


def _tuned_class(kind: type) -> type:
    tuned = _tuned_classes.get(kind)
    if tuned is None:
        tuned = _tuned_classes[kind] = type(f"Tuned{kind.__name__}", (_Tuned, kind), {})
    return tuned


def _no_packet_log(*args: object, **kwargs: object) -> None:
    return None


def _packet_log_wanted() -> bool:
    return logging.getLogger("asyncssh").isEnabledFor(logging.DEBUG)


def tune_connection(conn: asyncssh.SSHServerConnection | asyncssh.SSHClientConnection) -> bool:
    """Apply the tuning to one connection; False (and one warning) if it cannot."""
    global _warned
    if not enabled():
        return False
    missing = missing_internals(conn)
    if missing:
        if not _warned:
            _warned = True
            log.warning("asyncssh %s lacks %s: SSH runs untuned", asyncssh.__version__, ", ".join(missing))
        return False
    c: Any = conn
    c._relay_tuning = _State(packet_log=_packet_log_wanted())
    c.__class__ = _tuned_class(type(conn))
    return True


def tune_channel(channel: object) -> None:
    """No packet-log formatting for a data channel's packets either (item 3)."""
    if enabled() and not _packet_log_wanted() and hasattr(channel, "log_sent_packet"):
        c: Any = channel
        c.log_sent_packet = c.log_received_packet = _no_packet_log
