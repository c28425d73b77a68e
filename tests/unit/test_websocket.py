"""The WebSocket codec of SSH over WebSocket (relay/websocket.py): handshake checks, and the parser of
client frames, against frames built here by the RFC's rules (and, end to end, by aiohttp's client)."""

from __future__ import annotations

import base64
import os
import struct

import pytest

from relay import websocket as ws

KEY = base64.b64encode(b"0123456789abcdef").decode()


def client_frame(
    opcode: int, payload: bytes, *, final: bool = True, masked: bool = True, rsv: int = 0
) -> bytes:
    first = (0x80 if final else 0) | rsv | opcode
    n = len(payload)
    bit = 0x80 if masked else 0
    if n < 126:
        head = struct.pack("!BB", first, bit | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, bit | 127, n)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@pytest.mark.parametrize(
    ("method", "upgrade", "version", "key", "refused"),
    [
        ("GET", "websocket", "13", KEY, None),
        ("GET", "WebSocket", "13", KEY, None),
        ("POST", "websocket", "13", KEY, "is a GET"),
        ("GET", None, "13", KEY, "Upgrade: websocket"),
        ("GET", "h2c", "13", KEY, "Upgrade: websocket"),
        ("GET", "websocket", "8", KEY, "version 13"),
        ("GET", "websocket", None, KEY, "version 13"),
        ("GET", "websocket", "13", None, "16 random bytes"),
        ("GET", "websocket", "13", "not base64!", "16 random bytes"),
        ("GET", "websocket", "13", base64.b64encode(b"short").decode(), "16 random bytes"),
    ],
)
def test_handshake_refusal(
    method: str, upgrade: str | None, version: str | None, key: str | None, refused: str | None
) -> None:
    why = ws.handshake_refusal(method=method, upgrade=upgrade, version=version, key=key)
    assert (why is None) if refused is None else (why is not None and refused in why)


def test_accept_value_is_the_rfc_example() -> None:
    assert ws.accept_value("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 125, 126, 65535, 65536, 200_000])
def test_binary_frames_of_every_length_class_come_out_whole_fed_byte_by_byte_or_at_once(size: int) -> None:
    payload = os.urandom(size)
    data = client_frame(0x2, payload)
    assert ws.FrameParser(1 << 20).feed(data) == [ws.Frame(ws.Opcode.BINARY, payload)]
    parser = ws.FrameParser(1 << 20)
    step = max(1, len(data) // 7)
    out: list[ws.Frame] = []
    for i in range(0, len(data), step):
        out += parser.feed(data[i : i + step])
    assert out == [ws.Frame(ws.Opcode.BINARY, payload)]


def test_fragments_pings_and_close_in_one_read() -> None:
    data = (
        client_frame(0x2, b"ab", final=False)
        + client_frame(0x9, b"hi")  # a ping between fragments is allowed
        + client_frame(0x0, b"cd")
        + client_frame(0x8, struct.pack("!H", 1000))
    )
    frames = ws.FrameParser(1024).feed(data)
    assert [(f.opcode, f.payload) for f in frames] == [
        (ws.Opcode.BINARY, b"ab"),
        (ws.Opcode.PING, b"hi"),
        (ws.Opcode.BINARY, b"cd"),
        (ws.Opcode.CLOSE, struct.pack("!H", 1000)),
    ]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (client_frame(0x1, b"SSH-2.0-x"), ws.Close.UNSUPPORTED_DATA),
        (client_frame(0x2, b"x", masked=False), ws.Close.PROTOCOL_ERROR),
        (client_frame(0x2, b"x", rsv=0x40), ws.Close.PROTOCOL_ERROR),
        (client_frame(0x3, b"x"), ws.Close.PROTOCOL_ERROR),
        (client_frame(0x0, b"x"), ws.Close.PROTOCOL_ERROR),  # nothing to continue
        (client_frame(0x2, b"a", final=False) + client_frame(0x2, b"b"), ws.Close.PROTOCOL_ERROR),
        (client_frame(0x9, b"x" * 126), ws.Close.PROTOCOL_ERROR),  # control frames are short
        (client_frame(0x9, b"x", final=False), ws.Close.PROTOCOL_ERROR),
        (client_frame(0x2, b"x" * 1025), ws.Close.TOO_BIG),
        # A length announced past the cap is refused before the payload arrives.
        (client_frame(0x2, b"x" * 70_000)[:14], ws.Close.TOO_BIG),
    ],
)
def test_broken_frames_end_with_the_rfc_close_code(data: bytes, code: ws.Close) -> None:
    with pytest.raises(ws.FrameError) as caught:
        ws.FrameParser(1024).feed(data)
    assert caught.value.code == code


def test_server_frames_are_final_and_unmasked() -> None:
    assert ws.frame(ws.Opcode.BINARY, b"abc") == b"\x82\x03abc"
    assert ws.frame(ws.Opcode.BINARY, b"x" * 300)[:4] == b"\x82\x7e\x01\x2c"
    assert ws.frame(ws.Opcode.BINARY, b"x" * 70_000)[:10] == b"\x82\x7f" + struct.pack("!Q", 70_000)
    assert ws.close_frame(ws.Close.TOO_BIG, "big") == b"\x88\x05\x03\xf1big"
