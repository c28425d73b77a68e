"""Sharing rules, pure: which host a share names, who may create one, and how long it lasts.

The store keeps shares; the SSH command and the admin CLI word the results; the proxy asks
``relay.auth.may_visit`` with the store's ``shared_with`` on every request.
"""

from __future__ import annotations

from .domains import validate_domain
from .errors import BadRequest
from .names import HostKind, classify_host, validate_name
from .store import ShareInfo, Store
from .store import parse_duration as store_duration

#: Longest a user share may be given (``--expires``); without it a share lasts until revoked.
MAX_SHARE_SECONDS = 365 * 24 * 3600


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


def public_refusal(*, caller_id: int, owner_id: int | None, host: str, admin: bool = False) -> str | None:
    """Why ``caller_id`` may not make ``host`` public (or private again), or None."""
    if owner_id is None:
        return f"{host} is not owned by anyone; open a tunnel on it first (or verify the domain)"
    if owner_id != caller_id and not admin:
        return f"{host} is not yours; only its owner can make it public"
    return None


def share_refusal(
    *, caller_id: int, owner_id: int | None, with_id: int, host: str, admin: bool = False
) -> str | None:
    """Why ``caller_id`` may not share ``host`` (owned by ``owner_id``) with ``with_id``, or None."""
    if owner_id is None:
        return f"{host} is not owned by anyone; open a tunnel on it first (or verify the domain)"
    if owner_id != caller_id and not admin:
        return f"{host} is not yours; only its owner can share it"
    if with_id == owner_id:
        return f"{host} is already its owner's; share it with another user"
    return None


def share_doc(share: ShareInfo) -> dict[str, object]:
    return {
        "id": share.id,
        "host": share.host,
        "kind": share.kind,
        "with": share.user,
        "owner": share.owner,
        "created": round(share.created_at, 3),
        "expires": None if share.expires_at is None else round(share.expires_at, 3),
    }
