"""The ``audit`` command users run over SSH (``ssh relay -- audit --since 1h``): the events of the
caller's own hosts and own account, newest first. Admins read every event with ``relay audit``."""

from __future__ import annotations

import json
import time

from .. import audit
from ..errors import RelayError
from ..sharing import parse_duration, share_host
from ..store import STORE_ERRORS, Store, User
from .commands import Outcome

EXEC_AUDIT = "audit"
AUDIT_USAGE = "usage: audit [--host NAME|DOMAIN] [--since 24h] [--limit 100]  [--json]"
_OPTIONS = frozenset({"--host", "--since", "--limit"})


def _options(argv: list[str]) -> dict[str, str] | None:
    options: dict[str, str] = {}
    it = iter(argv)
    for arg in it:
        value = next(it, None)
        if arg not in _OPTIONS or value is None or arg in options:
            return None
        options[arg] = value
    return options


def run_audit_command(argv: list[str], *, user: User, store: Store, relay_domain: str) -> Outcome:
    as_json = "--json" in argv
    options = _options([a for a in argv if a != "--json"])
    if options is None:
        return Outcome(2, stderr=AUDIT_USAGE + "\n")
    try:
        host = share_host(options["--host"], relay_domain=relay_domain)[0] if "--host" in options else None
        since = time.time() - parse_duration(options.get("--since", "24h"), most=10 * 365 * 86400)
        limit_text = options.get("--limit", "100")
        if not limit_text.isdigit():
            return Outcome(2, stderr=f"relay: --limit takes a number, not {limit_text[:20]!r}\n")
        events = audit.read(store, reader=user, host=host, since=since, limit=int(limit_text))
    except RelayError as exc:
        return Outcome(1, stderr=f"relay: {exc}\n")
    except STORE_ERRORS as exc:
        return Outcome(1, stderr=f"relay: the relay's store is unavailable ({exc}); try again shortly\n")
    if as_json:
        return Outcome(0, stdout=json.dumps([audit.event_doc(e) for e in events]) + "\n")
    return Outcome(0, stdout="".join(audit.event_line(e) + "\n" for e in events) or "no events\n")
