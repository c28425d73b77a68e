"""``relay``: run the relay and administer its users, tokens, keys and names (DESIGN §3.1).

Each command is a thin wrapper: it builds a Config or opens the Store and calls library code.
Admin commands print one JSON document with ``--json``, for scripts that provision users.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, TypeVar

import asyncssh
import typer

from . import __version__, audit, domain_claims, hostkey, onboarding, sharing
from .config import Config, PublicUrl, parse_address, parse_networks
from .datadir import DB_FILE, default_data_dir, ensure_data_dir, is_serving, recorded_store
from .dnscheck import DnsChecker, parse_dns_server
from .errors import RelayError
from .limits import Limits, describe
from .logwriter import BatchedStreamHandler, LineFormatter
from .names import validate_name
from .protocol import CLIENT_PATH
from .service import RelayService
from .store import ShareInfo, Store, parse_duration
from .store import copy as store_copy

app = typer.Typer(
    help="Relay: token-gated HTTP tunnels over SSH. Run `relay serve` on the VPS; "
    "manage users with the other commands (they work while the relay runs).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts show [env: ...] and [default: ...] literally
)
user_app = typer.Typer(
    rich_markup_mode=None, help="Users: who may open tunnels and visit them.", no_args_is_help=True
)
token_app = typer.Typer(
    rich_markup_mode=None, help="Access tokens: SSH passwords and visitor credentials.", no_args_is_help=True
)
key_app = typer.Typer(rich_markup_mode=None, help="SSH public keys that log users in.", no_args_is_help=True)
name_app = typer.Typer(rich_markup_mode=None, help="Owned tunnel names.", no_args_is_help=True)
domain_app = typer.Typer(
    rich_markup_mode=None,
    help="Custom domains: claim one for a user, publish the DNS records it prints, then verify.",
    no_args_is_help=True,
)
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
app.add_typer(key_app, name="key")
app.add_typer(name_app, name="name")
share_app = typer.Typer(
    rich_markup_mode=None,
    help="Shares: let another relay user visit a name or custom domain, as its owner does.",
    no_args_is_help=True,
)
app.add_typer(domain_app, name="domain")
app.add_typer(share_app, name="share")
store_app = typer.Typer(
    rich_markup_mode=None,
    help="The store itself: copy it into PostgreSQL for a cluster.",
    no_args_is_help=True,
)
app.add_typer(store_app, name="store")

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Data directory [env: RELAY_DATA_DIR; default: ~/.local/share/relay]",
        show_default=False,
    ),
]
StoreUrl = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar="RELAY_STORE",
        help="A cluster's PostgreSQL store (postgresql://USER@HOST/DB) in place of the data dir's "
        "SQLite file [env: RELAY_STORE]",
        show_default=False,
    ),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
DnsServer = Annotated[
    str | None,
    typer.Option(
        "--dns-server",
        help="Ask this DNS server (IP[:PORT]) instead of the system resolver.",
        show_default=False,
    ),
]

T = TypeVar("T")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


@contextmanager
def _store(data_dir: Path | None, url: str | None) -> Iterator[Store]:
    """The store an admin command acts on: ``--store``, else the cluster store the data dir's node
    serves (recorded by ``relay serve --store``), else the data dir's SQLite file."""
    path = data_dir or default_data_dir()
    try:
        url = url or recorded_store(path)
        if url:
            store = Store.connect(url)
        else:
            ensure_data_dir(path)
            store = Store.open(path)
    except RelayError as exc:
        _fail(str(exc))
        raise  # unreachable
    try:
        yield store
    except RelayError as exc:
        _fail(str(exc))
    finally:
        store.close()


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _audit(
    store: Store,
    event: str,
    *,
    host: str = "",
    owner_id: int | None = None,
    user_id: int | None = None,
    **detail: object,
) -> None:
    """An admin command's change, in the audit log (actor ``admin-cli``), written at once."""
    _audit_event(store, audit.Event(event, audit.ADMIN_CLI, host, "", detail, owner_id, user_id))


def _audit_event(store: Store, event: audit.Event) -> None:
    audit.write_batch(store, [event])


def _audit_share(store: Store, event: str, share: ShareInfo) -> None:
    detail: dict[str, object] = {"id": share.id, "kind": share.kind, "who": sharing.who(share)}
    detail["expires"] = share.expires_at
    _audit_event(store, audit.Event(event, audit.ADMIN_CLI, share.host, "", detail, share.owner_id))


def _user_id(store: Store, name: str) -> int | None:
    try:
        return store.get_user(name).id
    except RelayError:
        return None


def _emit(as_json: bool, doc: Any, lines: Callable[[], list[str]]) -> None:
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
    else:
        for line in lines():
            typer.echo(line)


# -- serve ---------------------------------------------------------------------------------------


@app.command()
def serve(
    domain: Annotated[
        str | None,
        typer.Option(
            help="The relay's domain; tunnels are NAME.DOMAIN. "
            "[default: localhost, or the --public-url host]",
            show_default=False,
        ),
    ] = None,
    http_port: Annotated[int, typer.Option(help="Plain HTTP port for visitors (0: any free port).")] = 8080,
    ssh_port: Annotated[int, typer.Option(help="SSH port for tunnel clients (0: any free port).")] = 2222,
    bind: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
    data_dir: DataDir = None,
    https_port: Annotated[
        int | None, typer.Option(help="Serve HTTPS too (needs --tls-cert/--tls-key).")
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="PEM certificate chain (a wildcard for the domain).")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key for --tls-cert.")] = None,
    tls_dir: Annotated[
        Path | None,
        typer.Option(
            help="Per-domain certificates chosen by SNI: TLS_DIR/HOST/fullchain.pem and privkey.pem "
            "(certbot's layout; re-read when they change). Needs --https-port.",
            show_default=False,
        ),
    ] = None,
    dns_server: DnsServer = None,
    trust_proxy: Annotated[
        list[str] | None,
        typer.Option(
            help="CIDR of a front proxy (e.g. Caddy) whose X-Forwarded-* headers are believed. Repeatable."
        ),
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option(
            help="How visitors reach the relay host, e.g. https://relay.example.com "
            "[default: http://DOMAIN:HTTP_PORT]",
            show_default=False,
        ),
    ] = None,
    metrics_bind: Annotated[
        str | None,
        typer.Option(
            metavar="ADDR:PORT",
            help="Serve Prometheus metrics at http://ADDR:PORT/metrics, on a listener of their own "
            "(e.g. 127.0.0.1:9464; never a visitor port). [default: off]",
            show_default=False,
        ),
    ] = None,
    store_url: StoreUrl = None,
    node: Annotated[
        str | None,
        typer.Option(
            "--node",
            help="This node's name in a cluster (one DNS label, unique among its nodes). Needs --store.",
            show_default=False,
        ),
    ] = None,
    cluster_address: Annotated[
        str | None,
        typer.Option(
            "--cluster-address",
            metavar="HOST:PORT",
            help="Where the cluster's other nodes reach this one (node-to-node requests, authenticated "
            "by the cluster's secret; keep it off the public internet). Needs --store.",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    limit: Annotated[
        list[str] | None,
        typer.Option(
            "--limit",
            metavar="NAME=VALUE",
            help="Override one limit or timeout, e.g. --limit http_head_timeout=10. Repeatable. "
            "`relay limits` lists every name with its default and meaning.",
        ),
    ] = None,
) -> None:
    """Run the relay: SSH for tunnel clients, HTTP for visitors. Stops cleanly on SIGTERM/Ctrl-C."""
    handler = BatchedStreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter())
    handler.install_direct()
    logging.basicConfig(level=log_level.upper(), handlers=[handler])
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    # The relay logs one line per request: skip the thread/process lookups every record would make
    # (none of them is in the format; the relay is one thread in one process).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # Nor where each call was made from (a walk up the stack per record, a third of an access
    # line's cost): the format has no file or line. Both are the logging HOWTO's "Optimization".
    logging._srcfile = None
    logging.logAsyncioTasks = False  # type: ignore[attr-defined]  # 3.12+: the task's name, not shown
    try:
        if domain is None:
            domain = PublicUrl.parse(public_url).domain if public_url else "localhost"
        config = Config(
            data_dir=data_dir or default_data_dir(),
            domain=domain.lower(),
            bind=bind,
            http_port=http_port,
            ssh_port=ssh_port,
            https_port=https_port,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_dir=tls_dir,
            dns_server=parse_dns_server(dns_server) if dns_server else None,
            trust_proxy=parse_networks(trust_proxy or []),
            public_url=public_url,
            limits=Limits().with_overrides(limit or []),
            metrics_bind=parse_address(metrics_bind, "--metrics-bind") if metrics_bind else None,
            store_url=store_url or None,
            node=node or "",
            cluster_address=parse_address(cluster_address, "--cluster-address") if cluster_address else None,
        )
    except RelayError as exc:
        _fail(str(exc))
        return
    try:
        _run(_serve(config))
    except RelayError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot listen: {exc.strerror or exc}")


def _run(coro: Any) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


async def _serve(config: Config) -> None:
    service = RelayService(config)
    service.open_store()
    try:
        await service.start()
    except BaseException:
        await service.shutdown()
        raise
    assert service.public is not None
    public = service.public
    out = [
        f"relay {__version__}: HTTP on {config.bind}:{service.http_port}, SSH on "
        f"{config.bind}:{service.ssh_port}"
        + (f", HTTPS on {config.bind}:{service.https_port}" if service.https_port else "")
        + f", public URL {public.relay_origin}"
        + (f", metrics on {service.metrics_address}" if service.metrics_address else ""),
        f"relay: SSH host key fingerprint {service.host_fingerprint}",
        f"relay: data dir {config.data_dir}",
    ]
    port_flag = "" if service.ssh_port == 22 else f"-p {service.ssh_port} "
    if service.bootstrap is not None:
        boot = service.bootstrap
        connect = onboarding.connect_string(
            boot.admin, boot.token, public.domain, service.ssh_port, service.host_fingerprint
        )
        out += [
            f"relay: first start: created admin user {boot.admin!r}. Its token, shown only now:",
            f"    {boot.token}",
            "relay: its connect string, the one secret a notebook needs (RELAY_URL), shown only now:",
            f"    {connect}",
            "relay: open a tunnel to a local port 8888 (enter the token as the password):",
            f"    ssh {port_flag}-R {boot.admin}:80:localhost:8888 {boot.admin}@{public.domain}",
            f"    → {public.tunnel_url(f'{boot.admin}.{public.domain}')}",
            "relay: or with the Python client (the secret in the environment, not on its command line,"
            " where every local user could read it):",
            f"    RELAY_URL='{connect}' relay-client connect --port 8888",
            f"relay: the client, served by this relay (install line and Colab cell): "
            f"{public.relay_origin}{CLIENT_PATH}",
        ]
    service.handle_signals()
    out.append("relay: ready (Ctrl-C or SIGTERM stops it)")
    for line in out:
        print(line, flush=True)
    await service.run_until_stopped()
    print("relay: stopped", flush=True)


# -- users ---------------------------------------------------------------------------------------


@user_app.command("add")
def user_add(
    name: Annotated[
        str, typer.Argument(help="User name: one DNS label; also the user's default tunnel name.")
    ],
    admin: Annotated[bool, typer.Option("--admin", help="Make the user an admin.")] = False,
    data_dir: DataDir = None,
    store_url: StoreUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Create a user and print their first token (shown once)."""
    with _store(data_dir, store_url) as store:
        validate_name(name)
        user = store.add_user(name, admin=admin)
        info, token = store.create_token(name, label="first token")
        _audit(store, "user_add", user_id=user.id, user=name, admin=admin, token_id=info.id)
        connect = onboarding.for_token(store, data_dir or default_data_dir(), name, token)
        _emit(
            as_json,
            {"user": asdict(user), "token": token, "token_id": info.id, "connect": connect},
            lambda: [
                f"created user {name}{' (admin)' if admin else ''}",
                f"token (shown only now): {token}",
                f"connect string, the one secret a notebook needs (RELAY_URL): {connect}",
                f"the client to install: {store.relay_origin()}{CLIENT_PATH}",
            ],
        )


@user_app.command("list")
def user_list(data_dir: DataDir = None, store_url: StoreUrl = None, as_json: JsonOut = False) -> None:
    """List users."""
    with _store(data_dir, store_url) as store:
        users = store.list_users()
        _emit(
            as_json,
            {"users": [asdict(u) for u in users]},
            lambda: (
                [f"{u.name}\t{'admin' if u.is_admin else 'user'}\t{_when(u.created_at)}" for u in users]
                or ["no users"]
            ),
        )


@user_app.command("remove")
def user_remove(
    name: str, data_dir: DataDir = None, store_url: StoreUrl = None, as_json: JsonOut = False
) -> None:
    """Remove a user with their tokens, keys, names and sessions (live tunnels end on reconnect)."""
    with _store(data_dir, store_url) as store:
        store.remove_user(name)
        _audit(store, "user_remove", user=name)
        _emit(as_json, {"removed": name}, lambda: [f"removed user {name}"])


# -- tokens --------------------------------------------------------------------------------------


@token_app.command("create")
def token_create(
    user: str,
    label: Annotated[str, typer.Option(help="A note to tell tokens apart.")] = "",
    expires: Annotated[str | None, typer.Option(help="Lifetime, e.g. 30d, 12h; default: never.")] = None,
    data_dir: DataDir = None,
    store_url: StoreUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Create a token for USER and print it (shown once)."""
    import time

    with _store(data_dir, store_url) as store:
        expires_at = time.time() + parse_duration(expires) if expires else None
        info, token = store.create_token(user, label=label, expires_at=expires_at)
        _audit(store, "token_create", user_id=_user_id(store, user), user=user, token_id=info.id, label=label)
        connect = onboarding.for_token(store, data_dir or default_data_dir(), user, token)
        _emit(
            as_json,
            {"token": token, **asdict(info), "connect": connect},
            lambda: [
                f"token {info.id} for {user} (expires {_when(expires_at)})",
                f"token (shown only now): {token}",
                f"connect string, the one secret a notebook needs (RELAY_URL): {connect}",
            ],
        )


@token_app.command("list")
def token_list(
    user: Annotated[str | None, typer.Argument()] = None,
    data_dir: DataDir = None,
    store_url: StoreUrl = None,
    as_json: JsonOut = False,
) -> None:
    """List tokens (ids only; secrets are never stored)."""
    with _store(data_dir, store_url) as store:
        tokens = store.list_tokens(user)
        _emit(
            as_json,
            {"tokens": [asdict(t) for t in tokens]},
            lambda: (
                [f"{t.id}\t{t.user}\t{t.label or '-'}\texpires {_when(t.expires_at)}" for t in tokens]
                or ["no tokens"]
            ),
        )


@token_app.command("revoke")
def token_revoke(
    token_id: str, data_dir: DataDir = None, store_url: StoreUrl = None, as_json: JsonOut = False
) -> None:
    """Revoke a token by its id (rly_xxxxxxxxxx); it stops working at once."""
    with _store(data_dir, store_url) as store:
        owner = next((t.user for t in store.list_tokens() if t.id == token_id), "")
        store.revoke_token(token_id)
        _audit(store, "token_revoke", user_id=_user_id(store, owner), user=owner, token_id=token_id)
        _emit(as_json, {"revoked": token_id}, lambda: [f"revoked {token_id}"])


# -- keys ----------------------------------------------------------------------------------------


@key_app.command("add")
def key_add(
    user: str,
    pubkey_file: Annotated[Path, typer.Argument(help="An OpenSSH public key file.")],
    data_dir: DataDir = None,
    store_url: StoreUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Register an SSH public key for USER."""
    try:
        text = pubkey_file.read_text().strip()
        key = asyncssh.import_public_key(text)
    except OSError as exc:
        _fail(f"cannot read {pubkey_file}: {exc.strerror}")
        return
    except (asyncssh.KeyImportError, ValueError) as exc:
        _fail(f"{pubkey_file} is not an OpenSSH public key: {exc}")
        return
    parts = text.split(None, 2)
    comment = parts[2] if len(parts) > 2 else ""
    with _store(data_dir, store_url) as store:
        info = store.add_key(
            user,
            fingerprint=str(key.get_fingerprint("sha256")),
            public_key=key.export_public_key().decode().strip(),
            comment=comment,
        )
        _audit(
            store, "key_add", user_id=_user_id(store, user), user=user, key_id=info.id, key=info.fingerprint
        )
        _emit(as_json, asdict(info), lambda: [f"key {info.id} {info.fingerprint} added for {user}"])


@key_app.command("list")
def key_list(
    user: Annotated[str | None, typer.Argument()] = None,
    data_dir: DataDir = None,
    store_url: StoreUrl = None,
    as_json: JsonOut = False,
) -> None:
    """List registered keys."""
    with _store(data_dir, store_url) as store:
        keys = store.list_keys(user)
        _emit(
            as_json,
            {"keys": [asdict(k) for k in keys]},
            lambda: [f"{k.id}\t{k.user}\t{k.fingerprint}\t{k.comment}" for k in keys] or ["no keys"],
        )


@key_app.command("remove")
def key_remove(
    key_id: int, data_dir: DataDir = None, store_url: StoreUrl = None, as_json: JsonOut = False
) -> None:
    """Remove a key by its id."""
    with _store(data_dir, store_url) as store:
        found = next((k for k in store.list_keys() if k.id == key_id), None)
        store.remove_key(key_id)
        owner = found.user if found is not None else ""
        _audit(store, "key_remove", user_id=_user_id(store, owner), user=owner, key_id=key_id)
        _emit(as_json, {"removed": key_id}, lambda: [f"removed key {key_id}"])


# -- names ---------------------------------------------------------------------------------------


@name_app.command("list")
def name_list(
    user: Annotated[str | None, typer.Argument()] = None,
    data_dir: DataDir = None,
    store_url: StoreUrl = None,
    as_json: JsonOut = False,
) -> None:
    """List owned names."""
    with _store(data_dir, store_url) as store:
        names = store.list_names(user)
        _emit(
            as_json,
            {"names": [{"name": n, "user": u} for n, u in names]},
            lambda: [f"{n}\t{u}" for n, u in names] or ["no names"],
        )


@name_app.command("release")
def name_release(
    name: str, data_dir: DataDir = None, store_url: StoreUrl = None, as_json: JsonOut = False
) -> None:
    """Release an owned name so that anyone may claim it."""
    with _store(data_dir, store_url) as store:
        owner_id = store.name_owner(name)
        store.release_name(name)
        _audit(
            store, "name_release", host=f"{name}.{store.relay_domain()}", owner_id=owner_id, user_id=owner_id
        )
        _emit(as_json, {"released": name}, lambda: [f"released {name}"])


# -- custom domains ------------------------------------------------------------------------------


@domain_app.command("add")
def domain_add(
    domain: str,
    user: Annotated[str, typer.Option("--user", help="The user who will own the domain.")],
    data_dir: DataDir = None,
    store_url: StoreUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Claim DOMAIN for a user and print the DNS records that prove it (then run `domain verify`)."""
    with _store(data_dir, store_url) as store:
        claim = domain_claims.add(store, domain, user, relay_domain=store.relay_domain())
        _audit(
            store, "domain_add", host=claim.domain, owner_id=claim.user_id, user_id=claim.user_id, user=user
        )
        _emit(
            as_json,
            domain_claims.claim_doc(claim, relay_domain=store.relay_domain()),
            lambda: domain_claims.claim_lines(
                claim,
                relay_domain=store.relay_domain(),
                how_to_verify=f"relay domain verify {claim.domain}",
            ),
        )


@domain_app.command("verify")
def domain_verify(
    domain: str,
    user: Annotated[
        str | None,
        typer.Option(
            "--user", help="Verify this user's claim (default: any claim DNS proves).", show_default=False
        ),
    ] = None,
    dns_server: DnsServer = None,
    data_dir: DataDir = None,
    store_url: StoreUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Look up the TXT record _relay-challenge.DOMAIN; exit 0 once it proves a claim, 1 with the reason."""
    try:
        checker = DnsChecker(parse_dns_server(dns_server) if dns_server else None)
    except RelayError as exc:
        _fail(str(exc))
        return
    with _store(data_dir, store_url) as store:
        claim = asyncio.run(
            domain_claims.verify(store, checker, domain, user, relay_domain=store.relay_domain())
        )
        owner = claim.user_id
        _audit(store, "domain_verify", host=claim.domain, owner_id=owner, user_id=owner, user=claim.user)
        _emit(
            as_json,
            domain_claims.claim_doc(claim, relay_domain=store.relay_domain()),
            lambda: [f"{claim.domain} is verified for {claim.user}"],
        )


@domain_app.command("list")
def domain_list(
    user: Annotated[str | None, typer.Option("--user", help="Only this user's domains.")] = None,
    data_dir: DataDir = None,
    store_url: StoreUrl = None,
    as_json: JsonOut = False,
) -> None:
    """List custom domain claims, verified or pending."""
    with _store(data_dir, store_url) as store:
        claims = store.list_domains(user)
        _emit(
            as_json,
            {"domains": [domain_claims.claim_doc(c, relay_domain=store.relay_domain()) for c in claims]},
            lambda: (
                [
                    f"{c.domain}\t{c.user}\t{'verified ' + _when(c.verified_at) if c.verified else 'pending'}"
                    for c in claims
                ]
                or ["no domains"]
            ),
        )


@domain_app.command("remove")
def domain_remove(
    domain: str,
    user: Annotated[
        str | None, typer.Option("--user", help="Only this user's claim (default: every claim).")
    ] = None,
    data_dir: DataDir = None,
    store_url: StoreUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Remove claims of DOMAIN; a running relay closes a tunnel on it within seconds."""
    with _store(data_dir, store_url) as store:
        claims = store.list_domains(user, domain.lower())
        domain_claims.remove(store, domain, user)
        for gone in claims:
            _audit(store, "domain_remove", host=gone.domain, owner_id=gone.user_id, user_id=gone.user_id)
        _emit(as_json, {"removed": domain.lower()}, lambda: [f"removed {domain.lower()}"])


# -- shares --------------------------------------------------------------------------------------


@share_app.command("add")
def share_add(
    target: Annotated[
        str, typer.Argument(metavar="NAME|DOMAIN", help="An owned tunnel name or a verified domain.")
    ],
    with_user: Annotated[str, typer.Option("--with", help="The relay user who may visit it.")],
    expires: Annotated[
        str | None,
        typer.Option("--expires", help="How long it lasts, e.g. 30d or 12h (default: until revoked)."),
    ] = None,
    data_dir: DataDir = None,
    store_url: StoreUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Share NAME (or DOMAIN) with another user: they visit it with their own token or sign-in.
    Prints the share's id (for `share revoke`)."""
    with _store(data_dir, store_url) as store:
        new = sharing.plan_share(
            store, target, with_user, expires, caller_id=0, admin=True, relay_domain=store.relay_domain()
        )
        share = sharing.add_share(store, new, Limits().share_max_users_per_host)
        _audit_share(store, "share_add", share)
        _emit(as_json, sharing.share_doc(share), lambda: [share.id])


@share_app.command("link")
def share_link(
    target: Annotated[
        str, typer.Argument(metavar="NAME|DOMAIN", help="An owned tunnel name or a verified domain.")
    ],
    expires: Annotated[
        str | None,
        typer.Option("--expires", help="How long it works, e.g. 1h or 7d (default 24h, at most 30d)."),
    ] = None,
    label: Annotated[
        str | None, typer.Option("--label", help="A name for it in share list and the audit log.")
    ] = None,
    data_dir: DataDir = None,
    store_url: StoreUrl = None,
    as_json: JsonOut = False,
) -> None:
    """A share link for NAME (or DOMAIN): whoever opens it gets a guest session for that one host
    until the link expires or is revoked. Prints the URL once; only its hash is kept."""
    with _store(data_dir, store_url) as store:
        new = sharing.plan_link(
            store, target, expires, label, caller_id=0, admin=True, relay_domain=store.relay_domain()
        )
        share = sharing.add_link(store, new, Limits().share_max_links_per_host)
        _audit_share(store, "link_add", share)
        url = sharing.link_url(store.relay_origin(), new.code)
        _emit(as_json, sharing.link_doc(share, url), lambda: [url])


@share_app.command("list")
def share_list(
    target: Annotated[
        str | None, typer.Argument(metavar="[NAME|DOMAIN]", help="Only this host's shares.")
    ] = None,
    data_dir: DataDir = None,
    store_url: StoreUrl = None,
    as_json: JsonOut = False,
) -> None:
    """List shares: id, host, kind (user, link, public), who (a user, link:LABEL or anyone), owner,
    expiry, uses so far."""
    with _store(data_dir, store_url) as store:
        host = sharing.share_host(target, relay_domain=store.relay_domain())[0] if target else None
        shares = store.list_shares(host=host)
        _emit(
            as_json,
            {"shares": [sharing.share_doc(s) for s in shares]},
            lambda: (
                [
                    f"{s.id}\t{s.host}\t{s.kind}\t{sharing.who(s)}\towner {s.owner}\t"
                    + f"created {_when(s.created_at)}\t"
                    + ("expires " + _when(s.expires_at) if s.expires_at else "no expiry")
                    + f"\tuses {s.uses}"
                    for s in shares
                ]
                or ["no shares"]
            ),
        )


@share_app.command("public")
def share_public(
    target: Annotated[
        str, typer.Argument(metavar="NAME|DOMAIN", help="An owned tunnel name or a verified domain.")
    ],
    state: Annotated[
        str, typer.Argument(metavar="on|off", help="on: anyone may open it, no credential needed.")
    ],
    data_dir: DataDir = None,
    store_url: StoreUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Make NAME (or DOMAIN) public (on) or private again (off), at the next request."""
    if state not in ("on", "off"):
        _fail(f"expected on or off, got {state!r}")
    with _store(data_dir, store_url) as store:
        host, owner = sharing.owned_host(target, store=store, relay_domain=store.relay_domain())
        refusal = sharing.public_refusal(caller_id=owner or 0, owner_id=owner, host=host, admin=True)
        if refusal is not None:
            _fail(refusal)
        assert owner is not None
        if store.set_public(host, owner, state == "on"):
            _audit(store, f"public_{state}", host=host, owner_id=owner)
        _emit(as_json, {"host": host, "public": state == "on"}, lambda: [f"{host} public {state}"])


@share_app.command("revoke")
def share_revoke(
    share_id: str, data_dir: DataDir = None, store_url: StoreUrl = None, as_json: JsonOut = False
) -> None:
    """Revoke a share; the user it named is refused at their next request."""
    with _store(data_dir, store_url) as store:
        share = store.revoke_share(share_id)
        _audit_share(store, "share_revoke", share)
        _emit(
            as_json,
            sharing.share_doc(share),
            lambda: [f"revoked {share.id} ({share.host}, {sharing.who(share)})"],
        )


# -- tunnels -------------------------------------------------------------------------------------


@app.command()
def tunnels(data_dir: DataDir = None, store_url: StoreUrl = None, as_json: JsonOut = False) -> None:
    """Live tunnels of the running relay: host, user, client address, since, bytes."""
    path = data_dir or default_data_dir()
    with _store(data_dir, store_url) as store:
        running = store.clustered or is_serving(path)  # a cluster's nodes publish their tunnels
        live = store.list_live() if running else []
        _emit(
            as_json,
            {"running": running, "tunnels": [asdict(t) for t in live]},
            lambda: (
                (
                    [
                        f"{t.host}\t{t.user}\t{t.client}\t{_when(t.since)}\tin {t.bytes_in} B\t"
                        f"out {t.bytes_out} B" + ("\tpublic" if t.public else "")
                        for t in live
                    ]
                    or ["no live tunnels"]
                )
                if running
                else [f"no relay serve is running on {path}"]
            ),
        )


@app.command("nodes")
def nodes_list(data_dir: DataDir = None, store_url: StoreUrl = None, as_json: JsonOut = False) -> None:
    """The nodes of the cluster: name, address, since, tunnels, last heartbeat (alive or dead).

    A node silent for 10 s is dead: its routes are void and its clients reconnect to the others."""
    with _store(data_dir, store_url) as store:
        if not store.clustered:
            _fail("not a cluster: give --store postgresql://… (or run this on a node's data dir)")
        nodes = store.nodes()
        _emit(
            as_json,
            {"nodes": [{**asdict(n), "alive": n.alive} for n in nodes]},
            lambda: (
                [
                    f"{n.name}\t{n.address}\tsince {_when(n.started_at)}\t{n.tunnels} tunnels\t"
                    f"heard {n.silent_for:.1f} s ago\t"
                    + ("draining" if n.draining else "alive" if n.alive else "DEAD")
                    for n in nodes
                ]
                or ["no nodes"]
            ),
        )


@app.command("audit")
def audit_log(
    user: Annotated[str | None, typer.Option("--user", help="Only events by or about this user.")] = None,
    host: Annotated[str | None, typer.Option("--host", metavar="NAME|DOMAIN", help="Only this host.")] = None,
    since: Annotated[str, typer.Option("--since", help="How far back, e.g. 1h, 7d.")] = "24h",
    limit: Annotated[int, typer.Option("--limit", help="Most events printed (newest first).")] = 100,
    data_dir: DataDir = None,
    store_url: StoreUrl = None,
    as_json: JsonOut = False,
) -> None:
    """The audit log, newest first: visits (first request of each session on each host), sign-ins and
    failed sign-ins, tunnels opened and closed, share, link, public, token, key, user and domain
    changes. --json prints an array of events."""
    with _store(data_dir, store_url) as store:
        where = sharing.share_host(host, relay_domain=store.relay_domain())[0] if host else None
        who = store.get_user(user) if user else None
        start = time.time() - sharing.parse_duration(since, most=10 * 365 * 86400)
        events = audit.read(store, reader=None, host=where, user=who, since=start, limit=limit)
        _emit(
            as_json,
            [audit.event_doc(e) for e in events],
            lambda: [audit.event_line(e) for e in events] or ["no events"],
        )


@store_app.command("migrate")
def store_migrate(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="The empty PostgreSQL database to copy into (postgresql://USER@HOST/DB).",
            show_default=False,
        ),
    ],
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Copy this data dir's SQLite store, and its SSH host key, into an empty PostgreSQL database.

    Stop `relay serve` on the data dir first. Every table is copied in one transaction and its row
    count checked before the commit; on any difference nothing is written. The data dir is only read:
    it stays a working single-node store. Then start the nodes with --store and the same URL.
    """
    path = data_dir or default_data_dir()
    if is_serving(path):
        _fail(f"relay serve is running on {path}: stop it first, so that no write is lost")
    if not (path / DB_FILE).exists():
        _fail(f"no store in {path} (nothing to migrate): give the data dir with --data-dir")
    try:
        source = Store.open(path)  # the data dir's own SQLite file, whatever its node served since
    except RelayError as exc:
        _fail(str(exc))
        raise  # unreachable
    with contextlib.closing(source):
        try:
            target = Store.connect(to)
        except RelayError as exc:
            _fail(str(exc))
            raise  # unreachable
        try:
            key = hostkey.exported(path)
            copied = store_copy.copy_tables(
                source.engine, target.engine, {hostkey.CLUSTER_KEY: key} if key else {}
            )
        except RelayError as exc:
            _fail(str(exc))
            raise  # unreachable
        finally:
            target.close()
        _emit(
            as_json,
            {"from": str(source.where), "to": target.where, "rows": copied},
            lambda: [
                f"copied {source.where} into {target.where}:",
                *(f"  {table}\t{rows}" for table, rows in copied.items()),
                f"start each node with: relay serve --store '{target.where}' --node NAME "
                "--cluster-address HOST:PORT",
            ],
        )


@app.command("limits")
def limits_list(as_json: JsonOut = False) -> None:
    """List every limit and timeout of `relay serve`, with its default (override with --limit)."""
    rows = describe()
    _emit(
        as_json,
        {"limits": [{"name": n, "default": d, "unit": u, "doc": doc} for n, d, u, doc in rows]},
        lambda: [f"{n} = {d} {u}\n    {doc}" for n, d, u, doc in rows],
    )


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    app()
