"""The server side of RFC 6455, as much as carrying a byte stream needs (SSH over WebSocket, DESIGN
§3.8): the handshake's checks and answer, an incremental parser of the client's frames, and the
server's frames. Pure: no I/O. Binary messages carry the stream (fragments are passed on as they come:
order is all a byte stream needs); pings are answered; text frames, unmasked or oversized frames and
anything malformed end the connection with the close code RFC 6455 gives for it."""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass
from enum import IntEnum

from . import wsmask

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Opcode(IntEnum):
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class Close(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003  # a text frame: this endpoint carries bytes only
    TOO_BIG = 1009


class FrameError(Exception):
    """The client broke the protocol; ``code`` is the close code to answer with."""

    def __init__(self, code: Close, message: str) -> None:
        super().__init__(message)
        self.code = code


def handshake_refusal(
    *, method: str, upgrade: str | None, version: str | None, key: str | None
) -> str | None:
    """Why an upgrade request cannot become a WebSocket (None: it can)."""
    if method != "GET":
        return "a WebSocket handshake is a GET"
    if (upgrade or "").lower() != "websocket":
        return "this path takes only a WebSocket upgrade (Upgrade: websocket)"
    if version != "13":
        return "only WebSocket version 13 is supported"
    try:
        raw = base64.b64decode(key or "", validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        return "Sec-WebSocket-Key must be 16 random bytes in base64"
    return None


def accept_value(key: str) -> str:
    """``Sec-WebSocket-Accept`` for the client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode()  # noqa: S324


def frame(opcode: Opcode, payload: bytes | bytearray = b"") -> bytes:
    """A server frame (final, unmasked)."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        head = struct.pack("!BB", first, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, 126, n)
    else:
        head = struct.pack("!BBQ", first, 127, n)
    return head + payload


def close_frame(code: Close, reason: str = "") -> bytes:
    return frame(Opcode.CLOSE, struct.pack("!H", code) + reason.encode()[:120])


@dataclass(frozen=True)
class Frame:
    opcode: Opcode
    payload: bytes | bytearray


class FrameParser:
    """Feed it the client's bytes; it returns the complete frames, unmasked. ``max_frame`` caps one
    frame's payload (a stream has no reason to send big ones, and each is held whole in memory).
    Each payload byte is copied once, out of what was read, and unmasked in place."""

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self._rest = bytearray()  # the start of a frame still incomplete
        self._in_binary = False  # inside a fragmented binary message

    def feed(self, data: bytes) -> list[Frame]:
        if self._rest:
            self._rest += data
            buf: bytes | bytearray = self._rest
        else:
            buf = data
        view = memoryview(buf)
        frames: list[Frame] = []
        pos = 0
        try:
            while (found := self._one(view, pos)) is not None:
                frame_, pos = found
                frames.append(frame_)
        finally:
            view.release()
            if buf is self._rest:
                del self._rest[:pos]  # in place: a big frame arriving in pieces is not recopied
            else:
                self._rest = bytearray(data[pos:])
        return frames

    def _one(self, view: memoryview, pos: int) -> tuple[Frame, int] | None:
        have = len(view) - pos
        if have < 2:
            return None
        first, second = view[pos], view[pos + 1]
        if first & 0x70:
            raise FrameError(Close.PROTOCOL_ERROR, "reserved bits set (no extension was agreed)")
        if not second & 0x80:
            raise FrameError(Close.PROTOCOL_ERROR, "a client frame must be masked")
        length, offset = second & 0x7F, 2
        if length == 126:
            if have < 4:
                return None
            length, offset = struct.unpack_from("!H", view, pos + 2)[0], 4
        elif length == 127:
            if have < 10:
                return None
            length, offset = struct.unpack_from("!Q", view, pos + 2)[0], 10
        if length > self.max_frame:
            raise FrameError(Close.TOO_BIG, f"frame of {length} bytes; at most {self.max_frame}")
        if have < offset + 4 + length:
            return None
        start = pos + offset + 4
        payload = bytearray(view[start : start + length])
        if payload:
            wsmask.mask(bytes(view[start - 4 : start]), payload)
        return self._check(first & 0x80 != 0, first & 0x0F, payload), start + length

    def _check(self, final: bool, code: int, payload: bytearray) -> Frame:
        try:
            opcode = Opcode(code)
        except ValueError:
            raise FrameError(Close.PROTOCOL_ERROR, f"unknown opcode {code}") from None
        if opcode >= Opcode.CLOSE:
            if not final or len(payload) > 125:
                raise FrameError(Close.PROTOCOL_ERROR, "a control frame must be final and short")
            return Frame(opcode, payload)
        if opcode is Opcode.TEXT or (opcode is Opcode.CONTINUATION and not self._in_binary):
            if opcode is Opcode.TEXT:
                raise FrameError(Close.UNSUPPORTED_DATA, "text frames are not accepted: send binary")
            raise FrameError(Close.PROTOCOL_ERROR, "a continuation with no message to continue")
        if opcode is Opcode.BINARY and self._in_binary:
            raise FrameError(Close.PROTOCOL_ERROR, "a new message inside a fragmented one")
        self._in_binary = not final
        return Frame(Opcode.BINARY, payload)
