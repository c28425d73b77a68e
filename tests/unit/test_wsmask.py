"""relay/wsmask.py leans on aiohttp's private Cython unmasker: this fails loudly the day aiohttp moves
or changes it (then SSH over WebSocket would fall back to pure Python, 40× slower per byte)."""

from __future__ import annotations

import os

import pytest

from relay import wsmask


def _reference(key: bytes, data: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 63, 64, 65, 1000, 65536 + 3])
def test_both_maskers_agree_with_the_rfc(size: int) -> None:
    key, data = os.urandom(4), os.urandom(size)
    for masker in (wsmask.mask, wsmask.mask_python):
        buffer = bytearray(data)
        masker(key, buffer)
        assert bytes(buffer) == _reference(key, data)


def test_aiohttps_cython_unmasker_is_still_where_the_relay_looks() -> None:
    found = wsmask._aiohttp_masker()
    assert found is not None, (
        "aiohttp._websocket.mask._websocket_mask_cython is gone: update relay/wsmask.py "
        "(SSH over WebSocket now unmasks in pure Python)"
    )
    assert wsmask.mask is found
