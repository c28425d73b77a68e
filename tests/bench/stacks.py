"""The stacks compared, each an :class:`Endpoint` a visitor connects to, all in front of one backend:

- ``direct``: the backend itself, the limit;
- ``classic``: throwaway ``sshd`` + ``ssh -N -R`` + an nginx front (the do-it-yourself way);
- ``classic-pty``: the same with ``ssh -tt`` (a pty: OpenSSH then sets TCP_NODELAY);
- ``relay-ssh``: ``relay serve`` + stock ``ssh -tt -R NAME:80:...``, as a person runs it in a terminal;
- ``relay-client``: ``relay serve`` + ``relay-client connect --port``;
- ``relay-client-wss``: the same over SSH over WebSocket (``--transport wss``, the relay's HTTP port).

Visitors of the relay send ``X-Relay-Token``, so routing and auth run on every request."""

from __future__ import annotations

import contextlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.harness import RelayProcess, client_argv, client_env, ssh_args, start_relay

from . import nginx
from .classic import CIPHER, Sshd, start_forward, start_sshd
from .cpu import Sides
from .http_client import Endpoint, wait_working
from .processes import Child, free_port, spawn

#: The relay's user for every benchmark tunnel.
USER = "bench"

#: Stack keys in table order; ``classic`` is the reference of every ratio.
ORDER = ("direct", "classic", "classic-pty", "relay-ssh", "relay-client", "relay-client-wss")
LABELS = {
    "direct": "direct to the backend (the limit)",
    "classic": "classic: sshd + `ssh -N -R` + nginx",
    "classic-pty": "classic, client with a pty (`ssh -tt -R`)",
    "relay-ssh": "relay + OpenSSH `ssh -tt -R`",
    "relay-client": "relay + `relay-client`",
    "relay-client-wss": "relay + `relay-client --transport wss`",
    # Only in the wide-area case: the browser straight to Lab, no delay (its own rendering time).
    "direct-local": "direct, without the delay (the browser's own time)",
}
REFERENCE = "classic"
REFERENCE_PTY = "classic-pty"
#: The stacks that open a tunnel (all but ``direct``).
TUNNELS = ORDER[1:]


@dataclass(frozen=True)
class Stack:
    key: str
    endpoint: Endpoint
    #: Whose CPU a workload on this stack counts (none for the direct rows: no tunnel to weigh).
    sides: Sides | None = None


@dataclass
class Servers:
    """The two SSH servers, with what a tunnel needs to log in to each."""

    relay: RelayProcess
    token: str
    key: Path  # registered with the relay for USER
    sshd: Sshd
    work: Path


async def start_servers(
    work: Path, cleanup: contextlib.AsyncExitStack, *, relay_extra: list[str] | None = None
) -> Servers:
    relay_dir = work / "relay"
    relay_dir.mkdir(mode=0o700)
    relay = start_relay(relay_dir, extra=relay_extra)
    cleanup.callback(relay.stop)
    token = relay.add_user(USER)
    key = relay.add_key(USER)
    sshd = await start_sshd(work / "sshd")
    cleanup.callback(sshd.stop)
    return Servers(relay, token, key, sshd, work)


def relay_endpoint(servers: Servers, name: str) -> Endpoint:
    port = servers.relay.http_port
    return Endpoint(port, f"{name}.localhost:{port}", {"X-Relay-Token": servers.token})


def spawn_tunnel(
    servers: Servers, kind: str, name: str, target: int, *, remote: int = 0, via: int | None = None
) -> Child:
    """Start the client side of a tunnel of ``kind`` to the backend port ``target``, without waiting.

    ``remote`` is the port sshd listens on for a classic forward; ``via`` a port that reaches the SSH
    server through a delaying proxy (the wide-area case)."""
    logdir = servers.work
    if kind in ("classic", "classic-pty"):
        return start_forward(servers.sshd, name, remote, target, pty=kind == "classic-pty", via=via)
    if kind == "relay-ssh":
        argv, env = ssh_args(servers.relay, USER, key=servers.key)
        if via is not None:
            argv[argv.index("-p") + 1] = str(via)  # OpenSSH takes the first -p it is given
        argv += ["-tt", "-o", f"Ciphers={CIPHER}", "-R", f"{name}:80:127.0.0.1:{target}", f"{USER}@127.0.0.1"]
        # stdin is a pipe held open, like a terminal's.
        return spawn(name, argv, logdir, env=env, stdin=subprocess.PIPE)
    if kind in ("relay-client", "relay-client-wss"):
        home = logdir / "client-home"
        home.mkdir(exist_ok=True)
        args = ["--user", USER, "--token", servers.token, "--name", name, "--port", str(target)]
        if kind == "relay-client-wss":  # ``via`` reaches the relay's HTTP port here
            wss = f"ws://localhost:{via or servers.relay.http_port}/_relay/ssh"
            args += ["--transport", "wss", "--wss", wss]
            return spawn(name, client_argv(servers.relay.ssh_port, args), logdir, env=client_env(home))
        return spawn(name, client_argv(via or servers.relay.ssh_port, args), logdir, env=client_env(home))
    raise ValueError(kind)


async def open_stack(
    servers: Servers,
    kind: str,
    name: str,
    target: int,
    probe: tuple[str, bytes | None],
    cleanup: contextlib.AsyncExitStack,
    *,
    via: int | None = None,
) -> Stack:
    """A working tunnel of ``kind`` (and, for the classic stack, its nginx front): ``probe`` (a path
    and the body expected there, if any) answers through it."""
    if kind in ("classic", "classic-pty"):
        remote, port = free_port(), free_port()
        front = await nginx.start_front(servers.work / f"nginx-{name}", port, remote, servers.work)
        cleanup.callback(front.stop)
        endpoint = Endpoint(port, f"127.0.0.1:{port}")
        server: tuple[int, ...] = (servers.sshd.child.pid, front.pid)
    else:
        remote = 0
        endpoint = relay_endpoint(servers, name)
        server = (servers.relay.proc.pid,)
    child = spawn_tunnel(servers, kind, name, target, remote=remote, via=via)
    cleanup.callback(child.stop)
    try:
        await wait_working(endpoint, *probe)
    except TimeoutError as exc:
        raise RuntimeError(f"{kind} tunnel did not come up: {exc}\n{child.log_tail()}") from None
    return Stack(kind, endpoint, Sides(server, (child.pid,)))


async def start_stacks(
    servers: Servers,
    target: int,
    probe: tuple[str, bytes | None],
    cleanup: contextlib.AsyncExitStack,
    *,
    prefix: str = "",
    via: dict[str, int] | None = None,
) -> list[Stack]:
    """Every stack in :data:`ORDER`, serving the backend on port ``target``.

    ``via`` maps a server ("relay", "sshd") to a port that reaches it through a delaying proxy, and
    "direct" to one that reaches the backend through it; ``prefix`` keeps tunnel names apart."""
    via = via or {}
    direct = via.get("direct", target)
    stacks = [Stack("direct", Endpoint(direct, f"127.0.0.1:{direct}"))]
    for kind in TUNNELS:
        server = "sshd" if kind.startswith("classic") else "relay-http" if kind.endswith("-wss") else "relay"
        stacks.append(
            await open_stack(servers, kind, f"{prefix}{kind}", target, probe, cleanup, via=via.get(server))
        )
    return stacks
