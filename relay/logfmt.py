"""One structured log line per event: ``event=NAME key=value ...`` (logfmt).

Values that came from a client (Host, path, SSH user name, error text) are escaped and length-capped
here, so a visitor cannot forge log lines with CR/LF, hide text with terminal escapes, or fill the disk
with one huge header. Anything shaped like a relay token is redacted wherever it appears: tokens,
cookies, the relay header and query tokens are never passed in, and this catches the ones a person
pasted into the wrong field (a token as the SSH user name, a token in a URL path).
"""

from __future__ import annotations

import logging
import re

from .logwriter import direct_sink

#: Longest value written for one field, characters (after escaping it may be up to 4x longer).
MAX_FIELD = 200

_BARE = re.compile(r"[A-Za-z0-9_.:/@+=,\[\]-]+")
_TOKEN_SHAPED = re.compile(r"rly_[0-9a-fA-F]{4,}[_0-9A-Za-z\-]*")


def escape(value: object, cap: int = MAX_FIELD) -> str:
    """A logfmt value: bare if it is plain, else double-quoted with every control and non-ASCII
    character escaped (``\\n``, ``\\x1b``, ``\\u202e``); capped at ``cap`` characters before escaping."""
    if type(value) is int:  # statuses, byte counts: nothing to redact or escape (hot path)
        return str(value)
    text = str(value)
    if "rly_" in text:
        text = _TOKEN_SHAPED.sub("rly_[redacted]", text)
    if len(text) > cap:
        text = text[:cap] + "..."
    if text and _BARE.fullmatch(text):
        return text
    escaped = text.encode("unicode_escape").decode("ascii").replace('"', '\\"')
    return f'"{escaped}"'


def line(event: str, **fields: object) -> str:
    """``event=EVENT k=v ...``; fields that are None are left out."""
    parts = [f"event={event}"]
    parts += [f"{key}={escape(value)}" for key, value in fields.items() if value is not None]
    return " ".join(parts)


def emit(logger: logging.Logger, level: int, event: str, **fields: object) -> None:
    """Log one event line (formatted only if ``level`` is enabled; straight to the relay's log
    handler when nothing else would see it, see :mod:`relay.logwriter`)."""
    if logger.isEnabledFor(level):
        sink = direct_sink(logger)
        if sink is not None:
            sink.write_line(logger.name, level, line(event, **fields))
        else:
            logger.log(level, "%s", line(event, **fields))
