"""The Python API for notebook cells: ``client.connect(lab=True)`` returns at once with the URL while
the tunnel (and Lab) run in a background thread with their own event loop, so the cell never blocks
and an already running IPython loop is left alone."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import sys
import threading
from html import escape
from pathlib import Path

from .config import ClientError, HostKeyPins, config_dir
from .publish import Publisher
from .settings import build_spec


class Connection:
    """A live tunnel: ``.url`` to open, ``.close()`` to end it (and stop Lab)."""

    def __init__(
        self,
        url: str,
        tunnel_url: str,
        loop: asyncio.AbstractEventLoop,
        publisher: Publisher,
        thread: threading.Thread,
    ) -> None:
        self.url = url
        self.tunnel_url = tunnel_url
        self._loop = loop
        self._publisher = publisher
        self._thread = thread

    def close(self, timeout: float = 20.0) -> None:
        if not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self._publisher.stop(), self._loop)
        try:
            future.result(timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def __repr__(self) -> str:
        return f"<relay Connection {self.url}>"

    def _repr_html_(self) -> str:
        return f'<a href="{escape(self.url)}" target="_blank">{escape(self.url)}</a>'


def connect(
    *,
    relay: str | None = None,
    token: str | None = None,
    user: str | None = None,
    name: str | None = None,
    domain: str | None = None,
    lab: bool = False,
    port: int | None = None,
    notebook_dir: str | Path | None = None,
    host_key: str | None = None,
    key: str | Path | None = None,
    tcp: str | None = None,
    transport: str | None = None,
    wss: str | None = None,
    timeout: float = 180.0,
    quiet: bool = False,
) -> Connection:
    """Open a tunnel in the background and return once its URL is known.

    Settings not given come from ``RELAY_URL`` (the one-secret connect string ``relay user add`` prints)
    or ``RELAY_HOST``/``RELAY_TOKEN``/``RELAY_USER``, Colab secrets of the same names, or the profile
    saved by ``relay-client login``. ``relay`` may be the connect string itself. ``tcp="box:22:22"``
    publishes a local TCP port as the alias ``box:22`` instead (``conn.url`` is then ``HOST:PORT``).
    ``transport`` is ``"auto"`` (the SSH port, then SSH over WebSocket on 443), ``"ssh"`` or ``"wss"``.
    """
    directory = config_dir()
    spec = build_spec(
        directory,
        relay=relay,
        token=token,
        user=user,
        name=name,
        domain=domain,
        port=port,
        lab=lab,
        host_key=host_key,
        key=Path(key) if key else None,
        tcp=tcp,
        transport=transport,
        wss=wss,
    )

    def events(line: str) -> None:
        if not quiet:
            print(f"relay-client: {line}", file=sys.stderr, flush=True)

    publisher = Publisher(
        spec,
        HostKeyPins(directory),
        events,
        lab=lab,
        notebook_dir=Path(notebook_dir) if notebook_dir else None,
    )
    loop = asyncio.new_event_loop()
    started: concurrent.futures.Future[tuple[str, str]] = concurrent.futures.Future()

    async def main() -> None:
        try:
            pub = await publisher.start()
        except BaseException as exc:
            started.set_exception(exc)
            return
        started.set_result((pub.url, pub.tunnel_url))
        try:
            await publisher.wait()
        except Exception as exc:  # a fatal error after start: say so in the notebook's output
            events(f"tunnel ended: {exc}")
        finally:
            await publisher.stop()  # never leave Lab running without its tunnel

    def thread_main() -> None:
        asyncio.set_event_loop(loop)
        task = loop.create_task(main())
        try:
            loop.run_forever()
        finally:
            task.cancel()
            loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
            loop.close()

    thread = threading.Thread(target=thread_main, name="relay-client", daemon=True)
    thread.start()
    try:
        url, tunnel_url = started.result(timeout)
    except concurrent.futures.TimeoutError:
        _abandon(loop, publisher, thread)
        raise ClientError(f"no tunnel URL within {timeout:.0f} s (Lab start-up included)") from None
    except BaseException:
        _abandon(loop, publisher, thread)
        raise
    conn = Connection(url, tunnel_url, loop, publisher, thread)
    atexit.register(conn.close)  # the kernel exiting without close() must not leave Lab behind
    _show(conn)
    return conn


def _abandon(loop: asyncio.AbstractEventLoop, publisher: Publisher, thread: threading.Thread) -> None:
    if thread.is_alive():
        future = asyncio.run_coroutine_threadsafe(publisher.stop(), loop)
        with contextlib.suppress(Exception):
            future.result(20)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def _show(conn: Connection) -> None:
    """Under IPython, display a clickable link; elsewhere, the URL is printed by the caller."""
    ipython = sys.modules.get("IPython")
    if ipython is None or getattr(ipython, "get_ipython", lambda: None)() is None:
        return
    display = ipython.display  # IPython is untyped; call through the module already imported
    display.display(display.HTML(conn._repr_html_()))
