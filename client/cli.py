"""``relay-client``: publish a local port or JupyterLab through a Relay server (DESIGN §3.4)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer

from . import __version__
from .config import (
    ClientError,
    HostKeyPins,
    Profile,
    config_dir,
    one_secret,
    parse_relay,
    resolve,
    save_profile,
    wss_url,
)
from .connect import Fatal, TunnelClient
from .publish import Publisher
from .settings import build_spec

app = typer.Typer(
    help="Publish JupyterLab or any local port at https://NAME.your-relay, and keep it there.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts show [env: ...] and [default: ...] literally
)


def _say(line: str) -> None:
    print(f"relay-client: {line}", file=sys.stderr, flush=True)


RelayOpt = Annotated[
    str | None,
    typer.Option(
        "--relay",
        help="Relay SSH address HOST[:PORT] (port 2222 by default; a cluster's nodes as HOST[:PORT],HOST2, "
        "or one HOST with a DNS record per node, tried in turn when one is away), or the one-secret "
        "connect string "
        "relay://USER:TOKEN@HOST:PORT#SHA256:FP that `relay user add` prints (it pins the host key too; "
        "prefer RELAY_URL for it: other local users can read command lines), or wss://HOST for SSH over "
        "WebSocket only [env: RELAY_URL, RELAY_HOST]",
        show_default=False,
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="Your relay token [env: RELAY_TOKEN, or the Colab secret RELAY_TOKEN]. Prefer the variable: "
        "other local users can read command lines",
        show_default=False,
    ),
]
UserOpt = Annotated[
    str | None, typer.Option("--user", help="Your relay user name [env: RELAY_USER]", show_default=False)
]
HostKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--host-key",
        help="Pin the relay's host key up front (SHA256:..., as `relay serve` prints it).",
        show_default=False,
    ),
]


@app.command()
def connect(
    relay: RelayOpt = None,
    token: TokenOpt = None,
    user: UserOpt = None,
    name: Annotated[
        str | None,
        typer.Option(help="Tunnel name (NAME.relay-domain); default: your user name.", show_default=False),
    ] = None,
    domain: Annotated[
        str | None, typer.Option(help="A verified custom domain instead of a name.", show_default=False)
    ] = None,
    lab: Annotated[bool, typer.Option("--lab", help="Start JupyterLab and publish it.")] = False,
    port: Annotated[
        int | None, typer.Option(help="Publish this local port instead.", show_default=False)
    ] = None,
    notebook_dir: Annotated[
        Path | None, typer.Option(help="Lab's root directory (with --lab).", show_default=False)
    ] = None,
    host_key: HostKeyOpt = None,
    key: Annotated[
        Path | None,
        typer.Option(help="SSH private key to log in with instead of the token.", show_default=False),
    ] = None,
    lab_log: Annotated[
        Path | None,
        typer.Option(help="Append JupyterLab's own log to this file (with --lab).", show_default=False),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the URL as one JSON line.")] = False,
    transport: Annotated[
        str | None,
        typer.Option(
            "--transport",
            metavar="auto|ssh|wss",
            help="How to reach the relay. auto: its SSH port, and if that does not answer within 5 s, "
            "SSH over WebSocket on 443 (for networks that allow only HTTPS); ssh or wss: only that "
            "[env: RELAY_TRANSPORT; default: auto]",
            show_default=False,
        ),
    ] = None,
    wss: Annotated[
        str | None,
        typer.Option(
            "--wss",
            metavar="URL",
            help="The relay's SSH WebSocket [env: RELAY_WSS; default: wss://RELAY_HOST/_relay/ssh]",
            show_default=False,
        ),
    ] = None,
    tcp: Annotated[
        str | None,
        typer.Option(
            "--tcp",
            metavar="NAME:PORT:LOCALPORT",
            help="Publish a local TCP port as the alias NAME:PORT instead, reached only through the "
            "relay's SSH (e.g. box:22:22, then ssh -J USER@RELAY:2222 root@box). Prints NAME.DOMAIN:PORT.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Open the tunnel, print its URL on a line of its own, and hold it open until Ctrl-C / SIGTERM.

    Reconnects with backoff when the link or the relay drops, and gets the same URL back.
    """
    try:
        spec = build_spec(
            config_dir(),
            relay=relay,
            token=token,
            user=user,
            name=name,
            domain=domain,
            port=port,
            lab=lab,
            host_key=host_key,
            key=key,
            tcp=tcp,
            transport=transport,
            wss=wss,
        )
    except ClientError as exc:
        _fail(str(exc))
        return
    publisher = Publisher(
        spec, HostKeyPins(config_dir()), _say, lab=lab, notebook_dir=notebook_dir, lab_log=lab_log
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            pub = await publisher.start()
            if as_json:
                print(json.dumps({"url": pub.url, "tunnel_url": pub.tunnel_url}), flush=True)
            else:
                print(pub.url, flush=True)
            waiter = asyncio.ensure_future(publisher.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if waiter.done():
                waiter.result()  # re-raises a fatal error
            stopper.cancel()
        finally:
            await publisher.stop()
        _say("closed")

    try:
        _run(main())
    except (ClientError, Fatal) as exc:
        _fail(str(exc))


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """uvloop when it is there: the client moves every byte of the tunnel (DESIGN §5: +13 % req/s and
    +26 % bulk for the relay). The notebook API keeps asyncio: it runs beside the kernel's own loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


@app.command()
def login(
    relay: RelayOpt = None, token: TokenOpt = None, user: UserOpt = None, host_key: HostKeyOpt = None
) -> None:
    """Check the credentials against the relay, pin its host key, and save them (0600) for later calls."""
    try:
        one = one_secret(relay)
    except ClientError as exc:
        _fail(str(exc))
        return
    if one is not None:
        relay, user, token = f"{one.host}:{one.port}", user or one.user, token or one.token
        host_key = host_key or one.fingerprint
    relay = resolve(relay, "RELAY_HOST", None)
    user = resolve(user, "RELAY_USER", None)
    token = resolve(token, "RELAY_TOKEN", None)
    if not (relay and user and token):
        _fail("login needs --relay, --user and --token (or RELAY_HOST, RELAY_USER, RELAY_TOKEN)")
        return
    try:
        host, ssh_port = parse_relay(relay)
    except ClientError as exc:
        _fail(str(exc))
        return
    from .connect import TunnelSpec

    spec = TunnelSpec(
        relay_host=host, relay_port=ssh_port, user=user, local_port=0, token=token, host_key=host_key
    )

    async def check() -> None:
        client = TunnelClient(spec, HostKeyPins(config_dir()), _say)
        conn = await client._connect_once()
        conn.close()
        await conn.wait_closed()

    try:
        asyncio.run(check())
    except (ClientError, OSError) as exc:
        _fail(f"cannot log in to {host}:{ssh_port}: {exc}")
        return
    path = save_profile(config_dir(), Profile(relay=f"{host}:{ssh_port}", user=user, token=token))
    _say(f"logged in as {user} at {host}:{ssh_port}; saved to {path}")


@app.command()
def proxy(
    url: Annotated[str, typer.Argument(metavar="wss://HOST/_relay/ssh", help="The relay's SSH WebSocket.")],
) -> None:
    """A ProxyCommand for stock OpenSSH: carry one SSH connection over the relay's WebSocket (443).

    ssh -o ProxyCommand='relay-client proxy wss://relay.example.com/_relay/ssh' -p 2222 \
    -R lab:80:localhost:8888 alice@relay.example.com — works for ssh -R, ssh -J (ProxyJump to the
    relay), scp and sftp. Python only: no shell, so it runs on Windows too.
    """
    try:
        target = wss_url(url)
    except ClientError as exc:
        _fail(str(exc))
        return
    from .wss import proxy_stdio  # aiohttp, imported only for this command and --transport wss

    try:
        asyncio.run(proxy_stdio(target))
    except ClientError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        pass


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def _fail(message: str) -> None:
    typer.echo(f"relay-client: error: {message}", err=True)
    raise typer.Exit(1)


def main() -> None:
    app()
