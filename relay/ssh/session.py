"""A session channel: prints the connection's URLs and idles (the terminal of ``ssh -R``), or answers
the relay's own exec commands (``tunnels``, ``domain``). It runs no programs."""

from __future__ import annotations

import asyncio
import json
import shlex
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import asyncssh

from ..errors import RelayError
from ..protocol import EXEC_TUNNELS
from ..store import User
from .aliases import jump_hint
from .audit_command import AUDIT_USAGE, EXEC_AUDIT, run_audit_command
from .commands import EXEC_DOMAIN, USAGE, Outcome, run_domain_command
from .request_log import EXEC_LOG, LOG_USAGE, LineFeed, log_hosts, replay
from .share_command import EXEC_SHARE, SHARE_USAGE, ShareCommand

if TYPE_CHECKING:
    from .server import RelaySSHServer


#: Bytes of notices a session may have waiting unsent before new ones are skipped for it (they stay
#: in the connection's bounded list, which ``tunnels --json`` shows).
NOTICE_BACKLOG = 64 * 1024


class RelaySession(asyncssh.SSHServerSession[str]):
    """A session channel: prints URLs and idles, or answers the relay's own exec commands."""

    def __init__(self, server: RelaySSHServer) -> None:
        self.server = server
        self.chan: asyncssh.SSHServerChannel[str] | None = None
        self.command: str | None = None
        self.pty = False
        self._task: asyncio.Future[None] | None = None  # a running command (DNS lookups are async)
        self._unwatch: Callable[[], None] | None = None  # stops the request lines, if any

    def connection_made(self, chan: asyncssh.SSHServerChannel[str]) -> None:
        self.chan = chan
        self.server.open_sessions += 1

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Mapping[int, int]
    ) -> bool:
        self.pty = True  # makes OpenSSH set TCP_NODELAY; we never run anything on it
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self.command = command
        return True  # answered in session_started: unknown commands get a clear error

    def subsystem_requested(self, subsystem: str) -> bool:
        return False

    @property
    def _nl(self) -> str:
        return "\r\n" if self.pty else "\n"

    def session_started(self) -> None:
        assert self.chan is not None
        self.server.sessions.append(self)
        if self.command is not None:
            self._run(self.command)
            return
        asyncio.get_running_loop().call_soon(self._greet)

    def _greet(self) -> None:
        assert self.chan is not None
        for message in self.server.notices.lines():
            self.write_notice(message)
        ctx = self.server.ctx
        urls = [ctx.public.tunnel_url(t.host) for t in self.server.tunnels]
        for url in urls:
            self.chan.write(url + self._nl)
        for alias in self.server.aliases:
            hint = jump_hint(alias, domain=ctx.public.domain, ssh_port=ctx.ssh_port)
            self.chan.write(f"tcp {alias.key}: {hint}" + self._nl)
        if not urls and not self.server.aliases:
            self.chan.write_stderr(
                "relay: no tunnel on this connection. Use: ssh -R NAME:80:localhost:PORT "
                f"USER@{self.server.ctx.public.domain}" + self._nl
            )
        inspector = self.server.ctx.inspector
        if self.pty and inspector is not None:
            # The terminal of `ssh -R` shows each request of this connection's tunnels, as
            # `python -m http.server` would (a session without a pty, and -N, stay silent).
            tunnels = self.server.tunnels
            feed = self._feed(with_host=len(tunnels) > 1)
            self._unwatch = inspector.watch(lambda host: any(t.host == host for t in tunnels), feed)

    def _feed(self, *, with_host: bool) -> LineFeed:
        assert self.chan is not None
        backlog = self.server.ctx.limits.inspector_backlog
        return LineFeed(self.chan, nl=self._nl, backlog=backlog, with_host=with_host)

    async def _follow(self, argv: list[str], user: User) -> None:
        """``log [HOST]``: the last requests, then each new one until the channel closes."""
        ctx = self.server.ctx
        try:
            wants, host = await ctx.reads(
                lambda: log_hosts(
                    argv, user=user, store=ctx.store, registry=ctx.registry, relay_domain=ctx.public.domain
                )
            )
        except RelayError as exc:
            usage = exc.status == 2
            self._finish(Outcome(2 if usage else 1, stderr=f"{exc}\n" if usage else f"relay: {exc}\n"))
            return
        if self.chan is None or self.chan.is_closing():
            return
        if ctx.inspector is None:
            self.chan.exit(0)
            return
        feed = self._feed(with_host=not argv)
        hosts = [host] if host is not None else [t.host for t in ctx.registry.all() if wants(t.host)]
        replay(ctx.inspector, hosts, feed, 20)
        self._unwatch = ctx.inspector.watch(wants, feed)

    def write_notice(self, message: str) -> None:
        if self.chan is None or self.chan.is_closing():
            return
        if self.chan.get_write_buffer_size() > NOTICE_BACKLOG:
            return  # a client that does not read its session must not make us buffer for it
        self.chan.write_stderr(f"relay: {message}{self._nl}")

    def _run(self, command: str) -> None:
        assert self.chan is not None
        try:
            argv = shlex.split(command)
        except ValueError:
            argv = []
        if argv and argv[0] == EXEC_TUNNELS and set(argv[1:]) <= {"--json"}:
            self._task = asyncio.ensure_future(self._tunnels("--json" in argv))
            return
        if argv and argv[0] == EXEC_DOMAIN and self.server.user is not None:
            self._task = asyncio.ensure_future(self._domain(argv[1:], self.server.user.name))
            return
        if argv and argv[0] == EXEC_AUDIT and self.server.user is not None:
            self._task = asyncio.ensure_future(self._audit(argv[1:], self.server.user))
            return
        if argv and argv[0] == EXEC_LOG and self.server.user is not None:
            self._task = asyncio.ensure_future(self._follow(argv[1:], self.server.user))
            return
        if argv and argv[0] == EXEC_SHARE and self.server.user is not None:
            self._task = asyncio.ensure_future(self._share(argv[1:], self.server.user))
            return
        self.chan.write_stderr(
            f"relay: unknown command {command[:60]!r}; this relay runs no programs. "
            f"Available: {EXEC_TUNNELS} [--json], {USAGE.removeprefix('usage: ')}, "
            f"{SHARE_USAGE.removeprefix('usage: ')}, {AUDIT_USAGE.removeprefix('usage: ')}, "
            f"{LOG_USAGE.removeprefix('usage: ')}\n"
        )
        self.chan.exit(2)

    async def _tunnels(self, as_json: bool) -> None:
        doc = await self.server.ctx.reads(self.server.tunnels_doc)
        if self.chan is None or self.chan.is_closing():
            return
        if as_json:
            self.chan.write(json.dumps(doc) + "\n")
        else:
            tunnels = doc["tunnels"]
            assert isinstance(tunnels, list)
            for t in tunnels:
                self.chan.write(f"{t['url']}\t{t['client']}\n")
        self.chan.exit(0)

    async def _audit(self, argv: list[str], user: User) -> None:
        ctx = self.server.ctx
        outcome = await ctx.reads(
            lambda: run_audit_command(argv, user=user, store=ctx.store, relay_domain=ctx.public.domain)
        )
        self._finish(outcome)

    async def _share(self, argv: list[str], user: User) -> None:
        ctx = self.server.ctx
        command = ShareCommand(
            user=user,
            store=ctx.store,
            writer=ctx.writer,
            relay_domain=ctx.public.domain,
            relay_origin=ctx.public.relay_origin,
            limits=ctx.limits,
            audit=ctx.audit,
            client=self.server.peer,
            reads=ctx.reads,
        )
        outcome = await command.run(argv)
        self._finish(outcome)

    async def _domain(self, argv: list[str], user: str) -> None:
        ctx = self.server.ctx
        port = "" if ctx.ssh_port == 22 else f"-p {ctx.ssh_port} "
        outcome = await run_domain_command(
            argv,
            user=user,
            store=ctx.store,
            writer=ctx.writer,
            checker=ctx.dns,
            relay_domain=ctx.public.domain,
            ssh_hint=f"ssh {port}{user}@{ctx.public.domain}",
            audit=ctx.audit,
            user_id=self.server.user.id if self.server.user is not None else None,
            client=self.server.peer,
            reads=ctx.reads,
        )
        self._finish(outcome)

    def _finish(self, outcome: Outcome) -> None:
        if self.chan is None or self.chan.is_closing():
            return
        if outcome.stdout:
            self.chan.write(outcome.stdout)
        if outcome.stderr:
            self.chan.write_stderr(outcome.stderr)
        self.chan.exit(outcome.status)

    def data_received(self, data: str, datatype: asyncssh.DataType) -> None:
        # With a pty, Ctrl-C and Ctrl-D arrive as bytes: end the session as a shell would.
        if self.chan is not None and self.command is None and ("\x03" in data or "\x04" in data):
            self.chan.write_stderr("relay: closing" + self._nl)
            self.chan.exit(0)

    def eof_received(self) -> bool:
        return True  # keep idling: `ssh ... < /dev/null` must not end the tunnel

    def break_received(self, msec: int) -> bool:
        if self.chan is not None:
            self.chan.exit(0)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        if self.chan is not None:
            self.server.open_sessions -= 1
        if self in self.server.sessions:
            self.server.sessions.remove(self)
