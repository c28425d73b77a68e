"""Sharing rules, pure: which host a share names, who may create one, and how long it lasts.

The store keeps shares; the SSH command and the admin CLI word the results; the proxy asks
``relay.auth.may_visit`` with the store's ``shared_with`` on every request.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from .domains import validate_domain
from .errors import BadRequest, NotFound, RelayError
from .names import HostKind, classify_host, validate_name
from .protocol import SHARE_PATH
from .store import ShareInfo, Store
from .store import parse_duration as store_duration

#: Longest a user share may be given (``--expires``); without it a share lasts until revoked.
MAX_SHARE_SECONDS = 365 * 24 * 3600
#: A share link lasts this long unless ``--expires`` says otherwise, and never longer than the most.
DEFAULT_LINK_SECONDS = 24 * 3600
MAX_LINK_SECONDS = 30 * 24 * 3600
#: Longest link label (it is shown in ``share list`` and is the audit actor ``link:LABEL``).
MAX_LABEL = 40


def parse_duration(text: str, *, most: int = MAX_SHARE_SECONDS) -> float:
    """``90s``, ``45m``, ``1h``, ``30d`` as seconds (the tokens' syntax); BadRequest over ``most``."""
    seconds = store_duration(text)
    if seconds > most:
        raise BadRequest(f"duration {text!r} is longer than the most allowed ({most // 86400} d)")
    return seconds


def share_host(target: str, *, relay_domain: str) -> tuple[str, str | None]:
    """(public host, tunnel name or None for a custom domain) of ``share add NAME|DOMAIN``."""
    value = target.strip().lower().removesuffix(".")
    if "." not in value:
        value = f"{value}.{relay_domain}"
    kind = classify_host(value, relay_domain)
    if kind is HostKind.NAME:
        name = validate_name(value.partition(".")[0])  # says why a name cannot be one
        return value, name
    elif kind is HostKind.CUSTOM:
        return validate_domain(value, relay_domain=relay_domain), None
    raise BadRequest(f"{target!r} is not a tunnel name or a custom domain")


def owned_host(target: str, *, store: Store, relay_domain: str) -> tuple[str, int | None]:
    """(public host, its owner's id or None) of a NAME|DOMAIN argument."""
    host, name = share_host(target, relay_domain=relay_domain)
    return host, store.name_owner(name) if name is not None else store.verified_domain_owner(host)


def owner_refusal(*, caller_id: int, owner_id: int | None, host: str, admin: bool, doing: str) -> str | None:
    """Why ``caller_id`` may not act on ``host`` as its owner (``doing``: what, for the message)."""
    if owner_id is None:
        return f"{host} is not owned by anyone; open a tunnel on it first (or verify the domain)"
    if owner_id != caller_id and not admin:
        return f"{host} is not yours; only its owner can {doing}"
    return None


def public_refusal(*, caller_id: int, owner_id: int | None, host: str, admin: bool = False) -> str | None:
    """Why ``caller_id`` may not make ``host`` public (or private again), or None."""
    return owner_refusal(
        caller_id=caller_id, owner_id=owner_id, host=host, admin=admin, doing="make it public"
    )


def share_refusal(
    *, caller_id: int, owner_id: int | None, with_id: int, host: str, admin: bool = False
) -> str | None:
    """Why ``caller_id`` may not share ``host`` (owned by ``owner_id``) with ``with_id``, or None."""
    refusal = owner_refusal(caller_id=caller_id, owner_id=owner_id, host=host, admin=admin, doing="share it")
    if refusal is not None:
        return refusal
    if with_id == owner_id:
        return f"{host} is already its owner's; share it with another user"
    return None


def link_refusal(*, caller_id: int, owner_id: int | None, host: str, admin: bool = False) -> str | None:
    """Why ``caller_id`` may not make a share link for ``host``, or None."""
    return owner_refusal(
        caller_id=caller_id, owner_id=owner_id, host=host, admin=admin, doing="make links to it"
    )


def may_jump(*, user_id: int, owner_id: int, shared: frozenset[int]) -> bool:
    """Who may reach a TCP alias through the relay's SSH: its owner and the users its host is shared
    with. Never a link's guest or "anyone" (a public host is public over HTTP only): reaching an
    alias takes an SSH login, and the inner connection (often the runtime's sshd) is a shell."""
    return user_id == owner_id or user_id in shared


def link_expiry(text: str | None, *, now: float) -> float:
    """When a link made at ``now`` with ``--expires text`` ends (default 24 h, at most 30 d)."""
    if text is None:
        return now + DEFAULT_LINK_SECONDS
    return now + parse_duration(text, most=MAX_LINK_SECONDS)


def link_label(text: str | None, *, share_id_hint: str = "") -> str:
    """A link's label: printable, no spaces at the ends, at most MAX_LABEL; BadRequest otherwise."""
    label = (text or "").strip()
    if len(label) > MAX_LABEL or any(not c.isprintable() for c in label):
        raise BadRequest(f"a link label is at most {MAX_LABEL} printable characters")
    return label or share_id_hint


def new_link_code() -> str:
    """A share link's code: 192 random bits (stored only as a hash, shown once)."""
    return secrets.token_urlsafe(24)


def link_actor(label: str | None, share_id: str) -> str:
    """Who a guest is in the audit log and the inspector: ``link:LABEL`` (the id without a label)."""
    return f"link:{label or share_id}"


def link_gone(
    share: ShareInfo | None, *, guests: int, max_guests: int, now: float | None = None
) -> str | None:
    """Why a share link cannot be opened (unknown, revoked or expired alike; or used up), or None."""
    now = time.time() if now is None else now
    if share is None or share.kind != "link" or share.expires_at is None or share.expires_at <= now:
        return "This share link is no longer valid: it expired, was revoked, or never existed."
    if guests >= max_guests:
        return "This share link has been used up; ask its owner for a new one."
    return None


def link_url(relay_origin: str, code: str) -> str:
    return f"{relay_origin}{SHARE_PATH}/{code}"


def link_doc(share: ShareInfo, url: str) -> dict[str, object]:
    """``share link --json``: the link's share, and its URL (shown this once)."""
    return {**share_doc(share), "url": url}


def who(share: ShareInfo) -> str:
    """Whom a share lets in, as ``share list`` shows it."""
    if share.kind == "link":
        return link_actor(share.label, share.id)
    return share.user or "anyone"


@dataclass(frozen=True)
class NewShare:
    """A user share that may be made (every check passed); the write is the caller's."""

    host: str
    owner_id: int
    with_id: int
    with_name: str
    expires_at: float | None


@dataclass(frozen=True)
class NewLink:
    """A share link that may be made; ``code`` is shown once and only its hash is stored."""

    host: str
    owner_id: int
    code: str
    label: str
    expires_at: float


def plan_share(
    store: Store, target: str, with_name: str, expires: str | None, *, caller_id: int, admin: bool,
    relay_domain: str,
) -> NewShare:  # fmt: skip
    """``share add TARGET --with USER [--expires]`` checked, for the SSH command, the admin CLI and
    the dashboard alike; :class:`RelayError` says why not."""
    host, owner = owned_host(target, store=store, relay_domain=relay_domain)
    try:
        other = store.get_user(with_name.strip())
    except NotFound:
        raise NotFound(f"no relay user {with_name.strip()[:40]!r}") from None
    refusal = share_refusal(caller_id=caller_id, owner_id=owner, with_id=other.id, host=host, admin=admin)
    if refusal is not None or owner is None:
        raise RelayError(refusal or f"{host} is not owned by anyone")
    ends = time.time() + parse_duration(expires) if expires else None
    return NewShare(host, owner, other.id, other.name, ends)


def plan_link(
    store: Store, target: str, expires: str | None, label: str | None, *, caller_id: int, admin: bool,
    relay_domain: str,
) -> NewLink:  # fmt: skip
    """``share link TARGET [--expires] [--label]`` checked, with a new code; :class:`RelayError` says
    why not."""
    host, owner = owned_host(target, store=store, relay_domain=relay_domain)
    refusal = link_refusal(caller_id=caller_id, owner_id=owner, host=host, admin=admin)
    if refusal is not None or owner is None:
        raise RelayError(refusal or f"{host} is not owned by anyone")
    return NewLink(host, owner, new_link_code(), link_label(label), link_expiry(expires, now=time.time()))


def add_share(store: Store, new: NewShare, most: int) -> ShareInfo:
    """The write of a :func:`plan_share` (in the store writer's thread, or the admin CLI's store)."""
    return store.add_share(new.host, new.owner_id, new.with_id, expires_at=new.expires_at, max_per_host=most)


def add_link(store: Store, new: NewLink, most: int) -> ShareInfo:
    """The write of a :func:`plan_link`."""
    return store.add_link(
        new.host, new.owner_id, new.code, label=new.label, expires_at=new.expires_at, max_per_host=most
    )


def share_doc(share: ShareInfo) -> dict[str, object]:
    return {
        "id": share.id,
        "host": share.host,
        "kind": share.kind,
        "with": share.user,
        "owner": share.owner,
        "label": share.label,
        "created": round(share.created_at, 3),
        "expires": None if share.expires_at is None else round(share.expires_at, 3),
        "uses": share.uses,
    }
