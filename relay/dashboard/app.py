"""The dashboard's aiohttp application: pages, forms and the inspector's event stream.

It listens on a Unix socket in the data dir that only the relay process can reach; the front has
already authenticated the visitor (the relay host's session) and checked the Origin of every unsafe
request, and passes the user id, a hash of the session and the session's CSRF token in headers it
strips from whatever visitors send. Every change is a POST whose ``csrf`` field must match; every
host a request names is checked against :func:`relay.dashboard.rules.may_manage`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web

from .. import audit, domain_claims, sharing
from ..config import PublicUrl
from ..dnscheck import DnsChecker
from ..domains import records_to_create
from ..errors import RelayError
from ..inspector import Inspector, Row, size
from ..limits import Limits
from ..pages import ago
from ..protocol import (
    DASHBOARD_CLIENT_HEADER,
    DASHBOARD_CSRF_HEADER,
    DASHBOARD_PATH,
    DASHBOARD_SESSION_HEADER,
    DASHBOARD_USER_HEADER,
)
from ..store import STORE_ERRORS, Store, User, parse_duration
from ..storereads import RunReads, inline
from ..storewriter import StoreWriter
from ..tunnels import Registry
from . import rules
from .views import host_rows, tunnel_view

#: A strict policy: the page's own script and stylesheet, nothing inline, nothing from elsewhere.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
#: Seconds between keep-alive comments on the event stream (and checks that the session lives).
EVENTS_HEARTBEAT = 5.0


@dataclass
class DashboardContext:
    store: Store
    writer: StoreWriter
    registry: Registry
    inspector: Inspector
    public: PublicUrl
    limits: Limits
    dns: DnsChecker
    audit_log: audit.AuditLog | None = None
    #: Closes the live tunnel on a host (an admin's action); False if none was live.
    close_tunnel: Callable[[str], bool] = field(default=lambda host: False)
    #: The connect string of a new token (user, token) -> relay://... ("" when unknown).
    connect_string: Callable[[str, str], str] = field(default=lambda user, token: "")
    #: The user's live TCP aliases (user id) -> rows with ``alias``, ``hint``, ``client``, ``since``.
    aliases: Callable[[int], list[dict[str, object]]] = field(default=lambda user_id: [])
    #: Runs the pages' store reads (in reader threads on PostgreSQL: never on the loop).
    reads: RunReads = inline


@dataclass(frozen=True)
class Visitor:
    user: User
    session: str  # a hash of the relay-host session id
    csrf: str
    client: str = ""


def _visitor(request: web.Request, store: Store) -> Visitor:
    """Who the front says this is. A request without the front's headers never came through it."""
    raw = request.headers.get(DASHBOARD_USER_HEADER, "")
    user = store.user_by_id(int(raw)) if raw.isdigit() else None
    if user is None:
        raise web.HTTPForbidden(text="the dashboard is reached through the relay only")
    return Visitor(
        user,
        request.headers.get(DASHBOARD_SESSION_HEADER, ""),
        request.headers.get(DASHBOARD_CSRF_HEADER, ""),
        request.headers.get(DASHBOARD_CLIENT_HEADER, ""),
    )


class Dashboard:
    def __init__(self, ctx: DashboardContext) -> None:
        self.ctx = ctx
        loader = jinja2.FileSystemLoader(str(files("relay.dashboard") / "templates"))
        self.env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined)
        self.env.filters["when"] = _when
        self.env.filters["ago"] = _ago
        self.env.filters["size"] = size

    # -- rendering -----------------------------------------------------------------------------

    def page(self, name: str, visitor: Visitor, status: int = 200, **values: Any) -> web.Response:
        body = self.env.get_template(name).render(
            me=visitor.user, csrf=visitor.csrf, relay_host=self.ctx.public.domain, base=DASHBOARD_PATH,
            **values,
        )  # fmt: skip
        return web.Response(
            status=status,
            text=body,
            content_type="text/html",
            headers={
                "Cache-Control": "no-store",
                "Content-Security-Policy": CSP,
                "Referrer-Policy": "same-origin",
            },
        )

    def error(self, visitor: Visitor, status: int, message: str) -> web.Response:
        return self.page("error.html", visitor, status, message=message)

    # -- pages ---------------------------------------------------------------------------------

    async def visitor(self, request: web.Request) -> Visitor:
        store = self.ctx.store
        return await self.ctx.reads(lambda: _visitor(request, store))

    async def home(self, request: web.Request) -> web.Response:
        visitor = await self.visitor(request)
        values = await self.ctx.reads(lambda: self._home(visitor.user))
        return self.page("home.html", visitor, **values, flash=request.query.get("done", "")[:200])

    def _home(self, user: User) -> dict[str, Any]:
        ctx = self.ctx
        own, shared = host_rows(ctx.store, ctx.registry, ctx.public, user)
        values: dict[str, Any] = {
            "own": own,
            "shared": shared,
            "aliases": ctx.aliases(user.id),
            "tokens": ctx.store.list_tokens(user.name),
            "domains": self._domains(user),
        }
        if user.is_admin:
            values["users"] = ctx.store.list_users()
            values["all_tunnels"] = sorted(ctx.registry.all(), key=lambda t: t.host)
        return values

    def _domains(self, user: User) -> list[dict[str, object]]:
        out = []
        for claim in self.ctx.store.list_domains(user.name):
            records = (
                []
                if claim.verified
                else records_to_create(claim.domain, claim.challenge, relay_domain=self.ctx.public.domain)
            )
            out.append({"claim": claim, "records": records})
        return out

    async def tunnel(self, request: web.Request) -> web.Response:
        visitor = await self.visitor(request)
        host = request.query.get("host", "").lower()
        refusal = await self.ctx.reads(lambda: self._refusal(visitor, host))
        if refusal is not None:
            return refusal
        ctx = self.ctx
        view = await ctx.reads(
            lambda: tunnel_view(ctx.store, ctx.registry, ctx.inspector, ctx.public, host, visitor.user)
        )
        return self.page("tunnel.html", visitor, **view, flash=request.query.get("done", "")[:200])

    def _refusal(self, visitor: Visitor, host: str) -> web.Response | None:
        """403 unless ``visitor`` may manage ``host`` (its owner, or an admin); 404 if not served."""
        try:
            _, owner = sharing.owned_host(host, store=self.ctx.store, relay_domain=self.ctx.public.domain)
        except RelayError:
            return self.error(visitor, 404, f"{host[:100]} is not a tunnel host of this relay")
        if not rules.may_manage(caller_id=visitor.user.id, owner_id=owner, admin=visitor.user.is_admin):
            return self.error(visitor, 403, f"{host} is not yours")
        return None

    # -- the inspector's event stream ------------------------------------------------------------

    async def events(self, request: web.Request) -> web.StreamResponse:
        visitor = await self.visitor(request)
        origin, site = request.headers.get("Origin"), request.headers.get("Sec-Fetch-Site")
        if (origin is not None and origin != self.ctx.public.relay_origin) or site not in (
            None,
            "same-origin",
        ):
            return web.Response(status=403, text="cross-origin event stream refused")
        host = request.query.get("host", "").lower()
        refusal = await self.ctx.reads(lambda: self._refusal(visitor, host))
        if refusal is not None:
            return refusal
        queue: asyncio.Queue[Row] = asyncio.Queue(maxsize=500)

        def watch(row: Row) -> None:
            with contextlib.suppress(asyncio.QueueFull):  # a slow page skips rows, never buffers
                queue.put_nowait(row)

        stream = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await stream.prepare(request)
        stop = self.ctx.inspector.watch(lambda candidate: candidate == host, watch)
        try:
            store = self.ctx.store
            while await self.ctx.reads(lambda: store.session_alive(visitor.session)):
                try:
                    row = await asyncio.wait_for(queue.get(), EVENTS_HEARTBEAT)
                except (TimeoutError, asyncio.TimeoutError):
                    await stream.write(b": alive\n\n")
                    continue
                await stream.write(f"data: {json.dumps(row.doc())}\n\n".encode())
        finally:
            stop()
        return stream

    # -- changes -------------------------------------------------------------------------------

    async def _form(self, request: web.Request) -> tuple[Visitor, dict[str, str]]:
        visitor = await self.visitor(request)
        form = {k: str(v) for k, v in (await request.post()).items()}
        if not rules.csrf_ok(form.get("csrf", ""), visitor.csrf):
            raise web.HTTPForbidden(text="missing or wrong CSRF token; reload the page and try again")
        return visitor, form

    def _back(self, host: str | None, done: str) -> web.Response:
        target = f"{DASHBOARD_PATH}/tunnel?host={host}" if host else "/"
        sep = "&" if "?" in target else "?"
        raise web.HTTPSeeOther(f"{target}{sep}done={_quote(done)}")

    async def change(self, request: web.Request) -> web.Response:
        """Every POST: CSRF first, then the action, which checks ownership itself."""
        visitor, form = await self._form(request)
        action = request.match_info["action"]
        act = self._actions().get(action)
        if act is None:
            return self.error(visitor, 404, "no such action")
        try:
            return await act(visitor, form)
        except web.HTTPException:
            raise
        except RelayError as exc:
            return self.error(visitor, 403 if exc.status == 403 else 400, str(exc))
        except STORE_ERRORS as exc:
            return self.error(visitor, 503, f"the relay's store is unavailable ({exc}); try again shortly")

    def _actions(self) -> dict[str, Callable[[Visitor, dict[str, str]], Awaitable[web.Response]]]:
        return {
            "share": self._share, "link": self._link, "revoke": self._revoke, "public": self._public,
            "token": self._token, "token-revoke": self._token_revoke, "domain": self._domain,
            "domain-verify": self._domain_verify, "close": self._close,
        }  # fmt: skip

    async def _owned(self, visitor: Visitor, target: str) -> tuple[str, int]:
        store, domain = self.ctx.store, self.ctx.public.domain
        host, owner = await self.ctx.reads(
            lambda: sharing.owned_host(target, store=store, relay_domain=domain)
        )
        if owner is None or not rules.may_manage(
            caller_id=visitor.user.id, owner_id=owner, admin=visitor.user.is_admin
        ):
            raise RelayError(f"{host} is not yours", status=403)
        return host, owner

    def _record(
        self, visitor: Visitor, event: str, host: str, owner_id: int | None, **detail: object
    ) -> None:
        if self.ctx.audit_log is not None:
            self.ctx.audit_log.record(
                audit.Event(
                    event, visitor.user.name, host, visitor.client, dict(detail), owner_id, visitor.user.id
                )
            )

    async def _share(self, visitor: Visitor, form: dict[str, str]) -> web.Response:
        host, owner = await self._owned(visitor, form.get("host", ""))  # 403 for another user's host
        new = await self.ctx.reads(lambda: sharing.plan_share(
            self.ctx.store, host, form.get("with", ""), form.get("expires", "").strip() or None,
            caller_id=owner, admin=True, relay_domain=self.ctx.public.domain,
        ))  # fmt: skip
        most = self.ctx.limits.share_max_users_per_host
        share = await self.ctx.writer.run(lambda own: sharing.add_share(own, new, most))
        self._record(visitor, "share_add", host, owner, id=share.id, kind="user", who=new.with_name)
        return self._back(host, f"shared with {new.with_name}")

    async def _link(self, visitor: Visitor, form: dict[str, str]) -> web.Response:
        host, owner = await self._owned(visitor, form.get("host", ""))  # 403 for another user's host
        new = await self.ctx.reads(lambda: sharing.plan_link(
            self.ctx.store, host, form.get("expires", "").strip() or None, form.get("label"),
            caller_id=owner, admin=True, relay_domain=self.ctx.public.domain,
        ))  # fmt: skip
        most = self.ctx.limits.share_max_links_per_host
        share = await self.ctx.writer.run(lambda own: sharing.add_link(own, new, most))
        self._record(visitor, "link_add", host, owner, id=share.id, kind="link", who=sharing.who(share))
        url = sharing.link_url(self.ctx.public.relay_origin, new.code)
        return self.page(
            "shown_once.html", visitor, what="share link", value=url, host=host, share=share, connect=""
        )

    async def _revoke(self, visitor: Visitor, form: dict[str, str]) -> web.Response:
        store = self.ctx.store
        share = await self.ctx.reads(lambda: store.get_share(form.get("id", "")))
        await self._owned(visitor, share.host)
        await self.ctx.writer.run(lambda own: own.revoke_share(share.id, owner_id=share.owner_id))
        self._record(
            visitor,
            "share_revoke",
            share.host,
            share.owner_id,
            id=share.id,
            kind=share.kind,
            who=sharing.who(share),
        )
        return self._back(share.host, f"revoked {sharing.who(share)}")

    async def _public(self, visitor: Visitor, form: dict[str, str]) -> web.Response:
        host, owner = await self._owned(visitor, form.get("host", ""))
        on = form.get("on") == "on"
        if await self.ctx.writer.run(lambda own: own.set_public(host, owner, on)):
            self._record(visitor, "public_on" if on else "public_off", host, owner)
        return self._back(host, "public: anyone can open it" if on else "private again")

    async def _token(self, visitor: Visitor, form: dict[str, str]) -> web.Response:
        user = visitor.user
        label = form.get("label", "").strip()[:100]
        expires = form.get("expires", "").strip()
        ends = time.time() + parse_duration(expires) if expires else None
        info, token = await self.ctx.writer.run(
            lambda own: own.create_token(user.name, label=label, expires_at=ends)
        )
        self._record(visitor, "token_create", "", None, token_id=info.id, label=label)
        connect = self.ctx.connect_string(user.name, token)
        return self.page(
            "shown_once.html", visitor, what="token", value=token, host=None, share=None, connect=connect
        )

    async def _token_revoke(self, visitor: Visitor, form: dict[str, str]) -> web.Response:
        token_id = form.get("id", "")
        store = self.ctx.store
        mine = {t.id for t in await self.ctx.reads(lambda: store.list_tokens(visitor.user.name))}
        if token_id not in mine:
            raise RelayError(f"no token {token_id[:40]!r} of yours", status=403)
        await self.ctx.writer.run(lambda own: own.revoke_token(token_id))
        self._record(visitor, "token_revoke", "", None, token_id=token_id)
        return self._back(None, f"revoked {token_id}")

    async def _domain(self, visitor: Visitor, form: dict[str, str]) -> web.Response:
        name, domain = visitor.user.name, form.get("domain", "")
        claim = await self.ctx.writer.run(
            lambda own: domain_claims.add(own, domain, name, relay_domain=self.ctx.public.domain)
        )
        self._record(visitor, "domain_add", claim.domain, visitor.user.id)
        return self._back(None, f"claimed {claim.domain}: create the records below, then verify")

    async def _domain_verify(self, visitor: Visitor, form: dict[str, str]) -> web.Response:
        claim = await domain_claims.verify(
            self.ctx.store, self.ctx.dns, form.get("domain", ""), visitor.user.name,
            relay_domain=self.ctx.public.domain, write=self.ctx.writer.run, read=self.ctx.reads,
        )  # fmt: skip
        self._record(visitor, "domain_verify", claim.domain, visitor.user.id)
        return self._back(None, f"{claim.domain} is verified")

    async def _close(self, visitor: Visitor, form: dict[str, str]) -> web.Response:
        if not visitor.user.is_admin:
            raise RelayError("only an admin closes other users' tunnels", status=403)
        host = form.get("host", "").lower()
        closed = self.ctx.close_tunnel(host)
        return self._back(None, f"closed {host}" if closed else f"{host} was not live")

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        kinds = {
            "dashboard.css": "text/css",
            "dashboard.js": "text/javascript",
            "favicon.svg": "image/svg+xml",
        }
        if name not in kinds:
            raise web.HTTPNotFound()
        body = (files("relay.dashboard") / "static" / name).read_bytes()
        return web.Response(body=body, content_type=kinds[name], headers={"Cache-Control": "no-store"})


def dashboard_app(ctx: DashboardContext) -> web.Application:
    dashboard = Dashboard(ctx)
    app = web.Application(client_max_size=16 * 1024)
    app.router.add_get("/", dashboard.home)
    app.router.add_get(f"{DASHBOARD_PATH}/tunnel", dashboard.tunnel)
    app.router.add_get(f"{DASHBOARD_PATH}/events", dashboard.events)
    app.router.add_get(f"{DASHBOARD_PATH}/static/{{name}}", dashboard.static)
    app.router.add_post(f"{DASHBOARD_PATH}/{{action}}", dashboard.change)
    return app


def _quote(text: str) -> str:
    return quote(text[:200], safe="")


def _when(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def _ago(at: float | None) -> str:
    return "" if at is None else ago(time.time() - at)
