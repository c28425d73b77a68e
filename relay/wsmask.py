"""Unmasking WebSocket frames at C speed (SSH over WebSocket, /_relay/ssh).

Every byte a client sends is XOR-masked (RFC 6455 §5.3), so the bulk rate of SSH over WebSocket is
bounded by how fast the relay unmasks: pure Python manages about 0.5 GB/s with strided
``bytes.translate`` (below), aiohttp's Cython helper 20 GB/s. aiohttp is a core dependency, but the
helper lives in its private ``aiohttp._websocket`` package: this module is the one place that uses
it, falls back to the pure version when it is missing, and ``tests/unit/test_wsmask.py`` fails loudly
when aiohttp moves or changes it (pinned: tested with aiohttp 3.13 and 3.14).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

#: ``mask(key, data)``: XOR ``data`` (a bytearray, changed in place) with the 4-byte ``key``.
Masker = Callable[[bytes, bytearray], None]


@cache
def _tables() -> list[bytes]:
    """For each key byte k, the table that maps every byte b to b ^ k (for bytes.translate)."""
    return [bytes(b ^ k for b in range(256)) for k in range(256)]


def mask_python(key: bytes, data: bytearray) -> None:
    """Pure Python: each of the four key bytes applies to every fourth byte, one translate each."""
    tables = _tables()
    for i in range(4):
        data[i::4] = data[i::4].translate(tables[key[i]])


def _aiohttp_masker() -> Masker | None:
    try:
        from aiohttp._websocket.mask import _websocket_mask_cython  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    masker: Masker = _websocket_mask_cython
    return masker


#: The fastest masker available here.
mask: Masker = _aiohttp_masker() or mask_python
