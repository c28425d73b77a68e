"""The ``share`` command users run over SSH (``ssh relay -- share add lab --with bob``): sharing of
the caller's own names and verified domains with other relay users, share links, public tunnels.
Admins use ``relay share ...`` on the VPS, which acts for any owner. The rules are
:mod:`relay.sharing`'s."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from ..audit import AuditLog, Event
from ..errors import RelayError
from ..limits import Limits
from ..sharing import (
    add_link,
    add_share,
    link_doc,
    link_url,
    owned_host,
    plan_link,
    plan_share,
    public_refusal,
    share_doc,
    share_host,
    who,
)
from ..store import STORE_ERRORS, ShareInfo, Store, User
from ..storereads import RunReads, inline
from ..storewriter import StoreWriter
from .commands import Outcome

EXEC_SHARE = "share"
SHARE_USAGE = (
    "usage: share add NAME --with USER [--expires 30d] | share link NAME [--expires 24h] [--label L]"
    " | share list [NAME] | share revoke ID | share public NAME on|off  [--json]"
)
_USAGE = Outcome(2, stderr=SHARE_USAGE + "\n")
#: The options each verb takes (``--json`` aside), and how many positional arguments.
_VERBS: dict[str, tuple[frozenset[str], frozenset[int]]] = {
    "add": (frozenset({"with", "expires"}), frozenset({1})),
    "link": (frozenset({"expires", "label"}), frozenset({1})),
    "list": (frozenset(), frozenset({0, 1})),
    "revoke": (frozenset(), frozenset({1})),
    "public": (frozenset(), frozenset({2})),
}


def _line(share: ShareInfo) -> str:
    ends = (
        "never"
        if share.expires_at is None
        else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(share.expires_at))
    )
    made = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(share.created_at))
    return (
        f"{share.id}\t{share.host}\t{share.kind}\t{who(share)}\tcreated {made}\texpires {ends}"
        f"\tuses {share.uses}\n"
    )


def _options(args: list[str]) -> tuple[list[str], dict[str, str]] | None:
    """Positional arguments and ``--with``/``--expires``/``--label`` values; None on a malformed option."""
    positional, options = [], {}
    it = iter(args)
    for arg in it:
        if arg in ("--with", "--expires", "--label"):
            value = next(it, None)
            if value is None or arg[2:] in options:
                return None
            options[arg[2:]] = value
        elif arg.startswith("-"):
            return None
        else:
            positional.append(arg)
    return positional, options


@dataclass(frozen=True)
class ShareCommand:
    """One user's ``share`` command: ``run(argv)`` checks the usage, then one verb acts."""

    user: User
    store: Store
    writer: StoreWriter
    relay_domain: str
    relay_origin: str
    limits: Limits
    audit: AuditLog | None = None
    client: str = ""  # the SSH client's address, for the audit log
    reads: RunReads = inline  # how the store is read (off the loop on PostgreSQL)

    def _record(
        self, event: str, share: ShareInfo | None, host: str, owner_id: int, **detail: object
    ) -> None:
        if self.audit is None:
            return
        if share is not None:
            detail = {"id": share.id, "kind": share.kind, "who": who(share), **detail}
        self.audit.record(Event(event, self.user.name, host, self.client, detail, owner_id, self.user.id))

    async def run(self, argv: list[str]) -> Outcome:
        as_json = "--json" in argv
        parsed = _options([a for a in argv if a != "--json"])
        if parsed is None or not parsed[0] or parsed[0][0] not in _VERBS:
            return _USAGE
        (verb, *rest), options = parsed
        allowed, counts = _VERBS[verb]
        if len(rest) not in counts or not set(options) <= allowed:
            return _USAGE
        if (verb == "add" and "with" not in options) or (verb == "public" and rest[1] not in ("on", "off")):
            return _USAGE
        act = {
            "add": self._add, "link": self._link, "list": self._list, "revoke": self._revoke,
            "public": self._public,
        }[verb]  # fmt: skip
        try:
            doc, text = await act(rest, options)
        except RelayError as exc:
            return Outcome(1, stderr=f"relay: {exc}\n")
        except STORE_ERRORS as exc:
            return Outcome(1, stderr=f"relay: the relay's store is unavailable ({exc}); try again shortly\n")
        return Outcome(0, stdout=json.dumps(doc) + "\n" if as_json else text)

    async def _owned(self, target: str) -> tuple[str, int | None]:
        return await self.reads(lambda: owned_host(target, store=self.store, relay_domain=self.relay_domain))

    async def _list(self, rest: list[str], options: dict[str, str]) -> tuple[object, str]:
        host = share_host(rest[0], relay_domain=self.relay_domain)[0] if rest else None
        shares = await self.reads(lambda: self.store.list_shares(owner_id=self.user.id, host=host))
        return {"shares": [share_doc(s) for s in shares]}, "".join(_line(s) for s in shares) or "no shares\n"

    async def _revoke(self, rest: list[str], options: dict[str, str]) -> tuple[object, str]:
        share = await self.writer.run(lambda own: own.revoke_share(rest[0], owner_id=self.user.id))
        self._record("share_revoke", share, share.host, share.owner_id)
        return share_doc(share), f"revoked {share.id} ({share.host}, {who(share)})\n"

    async def _add(self, rest: list[str], options: dict[str, str]) -> tuple[object, str]:
        new = await self.reads(lambda: plan_share(
            self.store, rest[0], options["with"], options.get("expires"), caller_id=self.user.id,
            admin=False, relay_domain=self.relay_domain,
        ))  # fmt: skip
        share = await self.writer.run(lambda own: add_share(own, new, self.limits.share_max_users_per_host))
        self._record("share_add", share, new.host, new.owner_id, expires=share.expires_at)
        return share_doc(share), f"{share.id}\n"

    async def _link(self, rest: list[str], options: dict[str, str]) -> tuple[object, str]:
        """A new link, its URL printed this once (only its hash is kept)."""
        new = await self.reads(lambda: plan_link(
            self.store, rest[0], options.get("expires"), options.get("label"), caller_id=self.user.id,
            admin=False, relay_domain=self.relay_domain,
        ))  # fmt: skip
        share = await self.writer.run(lambda own: add_link(own, new, self.limits.share_max_links_per_host))
        self._record("link_add", share, new.host, new.owner_id, expires=share.expires_at)
        url = link_url(self.relay_origin, new.code)
        return link_doc(share, url), f"{url}\n"

    async def _public(self, rest: list[str], options: dict[str, str]) -> tuple[object, str]:
        host, owner = await self._owned(rest[0])
        on = rest[1] == "on"
        refusal = public_refusal(caller_id=self.user.id, owner_id=owner, host=host)
        if refusal is not None or owner is None:
            raise RelayError(refusal or "")
        if await self.writer.run(lambda own: own.set_public(host, owner, on)):
            self._record("public_on" if on else "public_off", None, host, owner)
        state = "public: anyone can open it, no credential needed" if on else "no longer public"
        return {"host": host, "public": on}, f"{host} is {state}\n"
