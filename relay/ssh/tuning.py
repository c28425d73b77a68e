"""asyncssh's per-packet overheads, removed on the relay's own SSH connections (DESIGN §5).

Moving a small request through asyncssh costs several times what OpenSSH spends, and none of it is
the crypto. Per data packet asyncssh (2.21–2.24):

1. sends an ``SSH_MSG_IGNORE`` packet first — a countermeasure against the CBC-mode IV attack that
   AEAD ciphers do not need (OpenSSH sends none); it doubles packets, ``send()`` calls and the peer's
   work. The relay offers only AES-GCM (``protocol.SSH_ENCRYPTION_ALGS``), so it is dropped there;
2. builds a new ``AESGCM`` object for each packet, in both directions: one object per key is kept;
3. formats a packet-log message (names, plurals, f-strings) before checking that nobody logs it;
4. cancels and re-arms the keepalive timer for each chunk it receives: the timer now re-arms itself
   for the remainder when it fires early;
5. writes each packet with its own ``send()``: the hot packets (channel data and window adjusts) of
   one event-loop pass leave in one ``writelines``; every other packet flushes what is queued and goes
   out at once, so a disconnect is never held back.

Each item needs asyncssh internals the library does not expose, so they live here, applied per
connection (instance attributes, never class patches: other asyncssh users in the process are
untouched), and ``tests/unit/test_ssh_tuning.py`` fails loudly when asyncssh changes under them. When a
needed attribute is missing the connection runs untuned (correct, slower) and one warning is logged.
Items 1, 2, 3 and 5 belong upstream; ``RELAY_SSH_TUNING=off`` turns this module off (the e2e suite
runs both ways).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
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

_warned = False


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "on").lower() not in ("off", "0", "no", "false")


def missing_internals(conn: object) -> list[str]:
    """What this asyncssh lacks of the internals the tuning needs (empty: all there)."""
    missing = [name for name in _CONN_ATTRS if not hasattr(conn, name)]
    probe = GCMCipher("aes128-gcm", b"\0" * 16, b"\0" * 12)
    missing += [f"GCMCipher.{name}" for name in ("_key", "_iv") if not hasattr(probe, name)]
    return missing


class _KeptGCM:
    """``GCMCipher`` with one AESGCM object per key and the invocation counter kept as an int."""

    def __init__(self, original: GCMCipher) -> None:
        self._aead = AESGCM(original._key)
        iv: bytes = original._iv
        self._fixed = iv[:4]
        self._counter = int.from_bytes(iv[4:], "big")

    def _next_iv(self) -> bytes:
        iv = self._fixed + self._counter.to_bytes(8, "big")
        self._counter = (self._counter + 1) & 0xFFFFFFFFFFFFFFFF
        return iv

    def encrypt_and_sign(self, header: bytes, data: bytes) -> tuple[bytes, bytes]:
        sealed = self._aead.encrypt(self._next_iv(), data, header)
        return header + sealed[:-16], sealed[-16:]

    def verify_and_decrypt(self, header: bytes, data: bytes, mac: bytes) -> bytes | None:
        try:
            return self._aead.decrypt(self._next_iv(), data + mac, header)
        except Exception:  # cryptography's InvalidTag: asyncssh turns None into a MAC error
            return None


def _keep_gcm(encryption: object) -> None:
    if isinstance(encryption, GCMEncryption):
        cipher = encryption._cipher
        if isinstance(cipher, GCMCipher):
            encryption._cipher = _KeptGCM(cipher)  # type: ignore[assignment]


@dataclass(eq=False)
class _State:
    conn: Any
    send_packet: Callable[..., None]
    keepalive_fired: Callable[[], None]
    queue: list[bytes] = field(default_factory=list)
    hot: bool = False
    last_rx: float = 0.0
    send_encryption: object = None
    recv_encryption: object = None
    aead: bool = False  # the send cipher authenticates each packet itself (no CBC-era IGNOREs needed)

    def send_packet_tuned(self, pkttype: int, *args: bytes, handler: object = None) -> None:
        conn = self.conn
        if conn._send_encryption is not self.send_encryption:  # new keys (first kex or a rekey)
            self.send_encryption = conn._send_encryption
            self.aead = isinstance(self.send_encryption, (GCMEncryption, ChachaEncryption))
            _keep_gcm(self.send_encryption)
        if pkttype == MSG_IGNORE and self.aead:
            # The relay itself never sends one: this is asyncssh's CBC countermeasure.
            return
        if conn._recv_encryption is not self.recv_encryption:
            self.recv_encryption = conn._recv_encryption
            _keep_gcm(self.recv_encryption)
        outer, self.hot = self.hot, pkttype in _HOT
        try:
            self.send_packet(pkttype, *args, handler=handler)
        finally:
            self.hot = outer

    def send(self, data: bytes) -> None:
        transport = self.conn._transport
        if transport is None:
            return
        if self.hot:
            if not self.queue:
                # FIFO: this runs before any abort asyncssh schedules after queueing more packets.
                self.conn._loop.call_soon(self.flush, transport)
            self.queue.append(data)
            return
        if self.queue:
            self.flush(transport)
        try:  # noqa: SIM105 - on the hot path, cheaper than contextlib.suppress
            transport.write(data)
        except ConnectionError:
            pass

    def flush(self, transport: Any) -> None:
        queue, self.queue = self.queue, []
        if queue:
            try:  # noqa: SIM105 - on the hot path, cheaper than contextlib.suppress
                transport.writelines(queue)
            except ConnectionError:
                pass

    def reset_keepalive(self) -> None:
        conn = self.conn
        if conn._auth_complete:
            self.last_rx = conn._loop.time()
            if conn._keepalive_timer is None:
                conn._set_keepalive_timer()

    def keepalive_timer(self) -> None:
        conn = self.conn
        interval = conn._keepalive_interval
        quiet = conn._loop.time() - self.last_rx
        if interval and quiet < interval:
            # Data arrived since the timer was set: wait out the rest of the interval.
            conn._keepalive_timer = conn._loop.call_later(interval - quiet, conn._keepalive_timer_callback)
            return
        self.keepalive_fired()


def _no_packet_log(*args: object, **kwargs: object) -> None:
    return None


def _packet_log_wanted() -> bool:
    return logging.getLogger("asyncssh").isEnabledFor(logging.DEBUG)


def tune_connection(conn: asyncssh.SSHServerConnection) -> bool:
    """Apply the tuning to one of the relay's connections; False (and one warning) if it cannot."""
    global _warned
    if not enabled():
        return False
    missing = missing_internals(conn)
    if missing:
        if not _warned:
            _warned = True
            log.warning("asyncssh %s lacks %s: SSH runs untuned", asyncssh.__version__, ", ".join(missing))
        return False
    kind = type(conn)
    c: Any = conn
    state = _State(
        conn=conn,
        send_packet=kind.send_packet.__get__(conn),
        keepalive_fired=kind._keepalive_timer_callback.__get__(conn),
    )
    c.send_packet = state.send_packet_tuned
    c._send = state.send
    c._reset_keepalive_timer = state.reset_keepalive
    c._keepalive_timer_callback = state.keepalive_timer
    if not _packet_log_wanted():
        c.log_sent_packet = c.log_received_packet = _no_packet_log
    return True


def tune_channel(channel: object) -> None:
    """No packet-log formatting for a data channel's packets either (item 3)."""
    if enabled() and not _packet_log_wanted() and hasattr(channel, "log_sent_packet"):
        c: Any = channel
        c.log_sent_packet = c.log_received_packet = _no_packet_log
