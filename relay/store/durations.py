"""Durations as the CLI and the SSH commands take them (``30d``, ``12h``, ...)."""

from __future__ import annotations

import re

from ..errors import BadRequest


def parse_duration(text: str) -> float:
    """``30d``, ``12h``, ``45m``, ``90s`` → seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    text = text.strip().lower()
    if (
        len(text) < 2
        or text[-1] not in units
        or not re.fullmatch(r"[0-9]{1,9}", text[:-1])
        or int(text[:-1]) == 0
    ):
        raise BadRequest(f"invalid duration {text!r}: use a number and a unit, e.g. 30d, 12h, 45m")
    return int(text[:-1]) * units[text[-1]]
