"""The ``domain`` command users run over SSH (``ssh relay -- domain add app.example.com``): custom
domain self-service for the logged-in user only. Returns exit status and output; the session writes
them. Admins use ``relay domain ...`` on the VPS, which acts for any user."""

from __future__ import annotations

import json
from dataclasses import dataclass

from .. import domain_claims
from ..audit import AuditLog, Event
from ..dnscheck import DnsChecker
from ..errors import RelayError
from ..store import STORE_ERRORS, Store
from ..storereads import RunReads, inline
from ..storewriter import StoreWriter

EXEC_DOMAIN = "domain"

USAGE = "usage: domain add DOMAIN | domain verify DOMAIN | domain list | domain remove DOMAIN  [--json]"


@dataclass(frozen=True)
class Outcome:
    status: int
    stdout: str = ""
    stderr: str = ""


async def run_domain_command(
    argv: list[str],
    *,
    user: str,
    store: Store,
    writer: StoreWriter,
    checker: DnsChecker,
    relay_domain: str,
    ssh_hint: str,
    audit: AuditLog | None = None,
    user_id: int | None = None,
    client: str = "",
    reads: RunReads = inline,
) -> Outcome:
    """``argv`` is what follows ``domain``. ``ssh_hint`` is how this user reaches the relay over SSH
    (``ssh -p 2222 USER@HOST``), for the next step printed after ``add``."""
    as_json = "--json" in argv
    args = [a for a in argv if a != "--json"]
    if (
        not args
        or args[0] not in ("add", "verify", "list", "remove")
        or len(args) != (1 if args[0] == "list" else 2)
    ):
        return Outcome(2, stderr=USAGE + "\n")
    verb = args[0]

    def record(domain: str) -> None:
        if audit is not None:
            audit.record(Event(f"domain_{verb}", user, domain, client, {}, user_id, user_id))

    try:
        if verb == "list":
            claims = await reads(lambda: store.list_domains(user))
            docs = [domain_claims.claim_doc(c, relay_domain=relay_domain) for c in claims]
            text = "".join(f"{c.domain}\t{'verified' if c.verified else 'pending'}\n" for c in claims)
            return _done(as_json, {"domains": docs}, text or "no domains\n")
        if verb == "remove":
            await writer.run(lambda own: domain_claims.remove(own, args[1], user))
            record(args[1].lower())
            return _done(as_json, {"removed": args[1].lower()}, f"removed {args[1].lower()}\n")
        if verb == "add":
            claim = await writer.run(
                lambda own: domain_claims.add(own, args[1], user, relay_domain=relay_domain)
            )
            record(claim.domain)
            lines = domain_claims.claim_lines(
                claim, relay_domain=relay_domain, how_to_verify=f"{ssh_hint} -- domain verify {claim.domain}"
            )
        else:
            claim = await domain_claims.verify(
                store, checker, args[1], user, relay_domain=relay_domain, write=writer.run, read=reads
            )
            record(claim.domain)
            lines = [f"{claim.domain} is verified; bind it with: ssh -R {claim.domain}:80:localhost:PORT ..."]
        doc = domain_claims.claim_doc(claim, relay_domain=relay_domain)
        return _done(as_json, doc, "\n".join(lines) + "\n")
    except RelayError as exc:
        return Outcome(1, stderr=f"relay: {exc}\n")
    except STORE_ERRORS as exc:
        return Outcome(1, stderr=f"relay: the relay's store is unavailable ({exc}); try again shortly\n")


def _done(as_json: bool, doc: object, text: str) -> Outcome:
    return Outcome(0, stdout=json.dumps(doc) + "\n" if as_json else text)
