"""The ``share`` command users run over SSH (``ssh relay -- share add lab --with bob``): sharing of
the caller's own names and verified domains with other relay users. Admins use ``relay share ...``
on the VPS, which acts for any owner. The rules are :mod:`relay.sharing`'s."""

from __future__ import annotations

import json
import time

from ..errors import NotFound, RelayError
from ..sharing import owned_host, parse_duration, public_refusal, share_doc, share_host, share_refusal
from ..store import STORE_ERRORS, ShareInfo, Store, User
from ..storewriter import StoreWriter
from .commands import Outcome

EXEC_SHARE = "share"
SHARE_USAGE = (
    "usage: share add NAME --with USER [--expires 30d] | share list [NAME] | share revoke ID"
    " | share public NAME on|off  [--json]"
)


def _line(share: ShareInfo) -> str:
    ends = (
        "never"
        if share.expires_at is None
        else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(share.expires_at))
    )
    return f"{share.id}\t{share.host}\t{share.kind}\t{share.user or 'anyone'}\texpires {ends}\n"


def _options(args: list[str]) -> tuple[list[str], dict[str, str]] | None:
    """Positional arguments and ``--with``/``--expires`` values; None on a malformed option."""
    positional, options = [], {}
    it = iter(args)
    for arg in it:
        if arg in ("--with", "--expires"):
            value = next(it, None)
            if value is None or arg[2:] in options:
                return None
            options[arg[2:]] = value
        elif arg.startswith("-"):
            return None
        else:
            positional.append(arg)
    return positional, options


async def run_share_command(
    argv: list[str], *, user: User, store: Store, writer: StoreWriter, relay_domain: str
) -> Outcome:
    as_json = "--json" in argv
    parsed = _options([a for a in argv if a != "--json"])
    if parsed is None or not parsed[0] or parsed[0][0] not in ("add", "list", "revoke", "public"):
        return Outcome(2, stderr=SHARE_USAGE + "\n")
    (verb, *rest), options = parsed
    if verb == "public":
        if options or len(rest) != 2 or rest[1] not in ("on", "off"):
            return Outcome(2, stderr=SHARE_USAGE + "\n")
        return await _public(
            rest[0],
            rest[1] == "on",
            as_json,
            user=user,
            store=store,
            writer=writer,
            relay_domain=relay_domain,
        )
    if (verb == "add" and (len(rest) != 1 or "with" not in options)) or (
        verb != "add" and (options or len(rest) != (1 if verb == "revoke" else len(rest[:1])))
    ):
        return Outcome(2, stderr=SHARE_USAGE + "\n")
    try:
        if verb == "list":
            host = share_host(rest[0], relay_domain=relay_domain)[0] if rest else None
            shares = store.list_shares(owner_id=user.id, host=host)
            text = "".join(_line(s) for s in shares) or "no shares\n"
            return _done(as_json, {"shares": [share_doc(s) for s in shares]}, text)
        if verb == "revoke":
            share = await writer.run(lambda own: own.revoke_share(rest[0], owner_id=user.id))
            return _done(
                as_json, share_doc(share), f"revoked {share.id} ({share.host}, {share.user or 'anyone'})\n"
            )
        share = await _add(rest[0], options, user=user, store=store, writer=writer, relay_domain=relay_domain)
        return _done(as_json, share_doc(share), f"{share.id}\n")
    except RelayError as exc:
        return Outcome(1, stderr=f"relay: {exc}\n")
    except STORE_ERRORS as exc:
        return Outcome(1, stderr=f"relay: the relay's store is unavailable ({exc}); try again shortly\n")


async def _add(
    target: str, options: dict[str, str], *, user: User, store: Store, writer: StoreWriter, relay_domain: str
) -> ShareInfo:
    host, owner = owned_host(target, store=store, relay_domain=relay_domain)
    try:
        other = store.get_user(options["with"])
    except NotFound:
        raise NotFound(f"no relay user {options['with']!r}") from None
    refusal = share_refusal(caller_id=user.id, owner_id=owner, with_id=other.id, host=host)
    if refusal is not None:
        raise RelayError(refusal)
    expires = time.time() + parse_duration(options["expires"]) if "expires" in options else None
    assert owner is not None
    return await writer.run(lambda own: own.add_share(host, owner, other.id, expires_at=expires))


async def _public(
    target: str, on: bool, as_json: bool, *, user: User, store: Store, writer: StoreWriter, relay_domain: str
) -> Outcome:
    try:
        host, owner = owned_host(target, store=store, relay_domain=relay_domain)
        refusal = public_refusal(caller_id=user.id, owner_id=owner, host=host)
        if refusal is not None:
            raise RelayError(refusal)
        assert owner is not None
        await writer.run(lambda own: own.set_public(host, owner, on))
    except RelayError as exc:
        return Outcome(1, stderr=f"relay: {exc}\n")
    except STORE_ERRORS as exc:
        return Outcome(1, stderr=f"relay: the relay's store is unavailable ({exc}); try again shortly\n")
    state = "public: anyone can open it, no credential needed" if on else "no longer public"
    return _done(as_json, {"host": host, "public": on}, f"{host} is {state}\n")


def _done(as_json: bool, doc: object, text: str) -> Outcome:
    return Outcome(0, stdout=json.dumps(doc) + "\n" if as_json else text)
