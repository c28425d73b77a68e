"""The WebSocket echo backend, in a process of its own so its CPU is not the benchmark's: the e2e
harness's aiohttp ``Backend`` app (``/ws`` echoes binary frames as they are), on a given port.

    python -m tests.bench.ws_echo PORT
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

from tests.e2e.harness import Backend


async def serve(port: int) -> None:
    runner = web.AppRunner(Backend().app(), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
