"""A TCP proxy that adds a fixed delay each way: a wide-area link on loopback, since no netem qdisc is
available here (DESIGN §5).

Every chunk read is held until ``delay`` seconds after it arrived, then written, in order; so a round
trip through the proxy takes 2 × ``delay`` more, while throughput is not capped (as on a fat long
link). A half-close is passed on after the data before it.

    python -m tests.bench.delay_proxy LISTEN_PORT TARGET_PORT [--delay 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from dataclasses import dataclass, field

#: Default one-way delay, seconds.
DEFAULT_DELAY = 0.05
#: Read size, bytes.
CHUNK = 64 * 1024
#: Chunks held per direction before reading stops: bounds memory and gives backpressure.
MAX_HELD = 1024


@dataclass
class DelayProxy:
    target_port: int
    delay: float = DEFAULT_DELAY
    server: asyncio.Server | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self, port: int = 0) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _serve(self, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            down_w.close()
            self.tasks.discard(task)
            return
        try:
            await asyncio.gather(self._direction(down_r, up_w), self._direction(up_r, down_w))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (up_w, down_w):
                w.close()
            self.tasks.discard(task)

    async def _direction(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(MAX_HELD)

        async def release() -> None:
            while True:
                due, data = await held.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        releaser = asyncio.create_task(release())
        try:
            while True:
                data = await reader.read(CHUNK)
                await held.put((loop.time() + self.delay, data))
                if not data:
                    break
            await releaser
        finally:
            releaser.cancel()


async def _main(listen: int, target: int, delay: float) -> None:
    proxy = DelayProxy(target, delay)
    await proxy.start(listen)
    try:
        await asyncio.Event().wait()
    finally:
        with contextlib.suppress(Exception):
            await proxy.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("listen", type=int)
    parser.add_argument("target", type=int)
    parser.add_argument("--delay", type=float, default=DEFAULT_DELAY)
    args = parser.parse_args()
    asyncio.run(_main(args.listen, args.target, args.delay))


if __name__ == "__main__":
    main()
