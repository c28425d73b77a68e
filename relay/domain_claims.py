"""Claiming and verifying custom domains: the steps shared by ``relay domain ...`` (the admin CLI) and
``ssh relay -- domain ...`` (users' self-service). Decisions are in :mod:`relay.domains`; this module
strings them together with the store and DNS, and words the results."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

from .dnscheck import DnsChecker
from .domains import challenge_refusal, new_challenge, records_to_create, validate_domain
from .errors import Conflict, NotFound, RelayError
from .store import DomainClaim, Store
from .storereads import RunReads, inline


def add(store: Store, raw_domain: str, user: str, *, relay_domain: str) -> DomainClaim:
    domain = validate_domain(raw_domain, relay_domain=relay_domain)
    return store.add_domain(domain, user, new_challenge())


async def verify(
    store: Store,
    checker: DnsChecker,
    raw_domain: str,
    user: str | None,
    *,
    relay_domain: str,
    write: Callable[[Callable[[Store], None]], Awaitable[None]] | None = None,
    read: RunReads = inline,
) -> DomainClaim:
    """Verify a claim of ``raw_domain`` (``user``'s, or whichever claim's value DNS holds).

    Raises :class:`RelayError` with the reason when DNS does not prove it. ``write`` runs the store
    write (the running relay passes its writer; the admin CLI writes directly); ``read`` runs its
    reads (the relay's reader threads on PostgreSQL).
    """
    domain = validate_domain(raw_domain, relay_domain=relay_domain)
    claims = await read(lambda: store.list_domains(user, domain))
    if not claims:
        who = f" by {user}" if user else ""
        raise NotFound(f"no claim of {domain}{who}; add it first: domain add {domain}")
    verified = [c for c in claims if c.verified]
    if verified:
        return verified[0]
    found = await checker.challenge_values(domain)
    for claim in claims:
        if challenge_refusal(domain, claim.challenge, found) is None:
            mark = partial(Store.mark_domain_verified, domain=domain, user_id=claim.user_id)
            if write is None:
                mark(store)
            else:  # the running relay: off the event loop
                await write(mark)
            done = await read(partial(store.domain_claim, domain, claim.user))
            assert done is not None
            return done
    reason = challenge_refusal(domain, claims[0].challenge, found) if len(claims) == 1 else None
    raise RelayError(
        f"{domain} is not verified: "
        + (reason or f"no TXT record at _relay-challenge.{domain} matches any pending claim")
    )


def remove(store: Store, raw_domain: str, user: str | None) -> None:
    domain = raw_domain.strip().lower().removesuffix(".")
    if user is None:
        store.remove_domain(domain)
        return
    if not store.domain_claim(domain, user):
        if store.verified_domain_owner(domain) is not None:
            raise Conflict(f"{domain} belongs to another user")
        raise NotFound(f"you have no claim of {domain}")
    store.remove_domain(domain, user)


def claim_doc(claim: DomainClaim, *, relay_domain: str) -> dict[str, object]:
    return {
        "domain": claim.domain,
        "user": claim.user,
        "verified": claim.verified,
        "verified_at": claim.verified_at,
        "records": [
            r.as_json() for r in records_to_create(claim.domain, claim.challenge, relay_domain=relay_domain)
        ],
    }


def claim_lines(claim: DomainClaim, *, relay_domain: str, how_to_verify: str) -> list[str]:
    """What a person reads after ``domain add``: the records to publish, then the next step."""
    if claim.verified:
        return [f"{claim.domain} is verified for {claim.user}; bind it with ssh -R {claim.domain}:80:..."]
    records = records_to_create(claim.domain, claim.challenge, relay_domain=relay_domain)
    width = max(len(r.name) for r in records) + 1
    lines = [f"{claim.domain}: claimed by {claim.user}, not verified yet. Create these DNS records:"]
    lines += [f"  {r.name + '.':<{width}}  {r.type:<5}  {r.value}" for r in records]
    lines += [
        "(an A/AAAA record with the relay's address works instead of the CNAME)",
        f"then run: {how_to_verify}",
    ]
    return lines
