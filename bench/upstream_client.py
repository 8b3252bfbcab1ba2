"""CPU a call of the gateway's upstream client, with and without the pool-wait trace.

The bounded wait for a pooled connection (``upstream_pool_wait_s``) is timed from aiohttp's
trace signals, and a session with a trace config sends every signal of every request. This
measures what that costs: a local aiohttp server and the client in one process, sequential
posts, CPU time per call, the two clients alternating so drift hits both.

    .venv/bin/python bench/upstream_client.py [--calls 4000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import aiohttp
from aiohttp import web

from tallygate.gateway.upstream import make_client, post_upstream

PORT = 8977


async def _serve() -> web.AppRunner:
    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b'{"ok":1}', content_type="application/json")

    app = web.Application()
    app.router.add_post("/x", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", PORT).start()
    return runner


def _plain_client() -> aiohttp.ClientSession:
    """The gateway's client as it was before the pool-wait trace."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=2000, limit_per_host=0), auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(), skip_auto_headers=("User-Agent", "Accept-Encoding"))


async def _cpu_per_call(traced: bool, calls: int) -> float:
    client = make_client(5, 30) if traced else _plain_client()
    url = f"http://127.0.0.1:{PORT}/x"
    try:
        for n in range(200 + calls):
            if n == 200:
                started = time.process_time()
            response = await (post_upstream(client, url, data=b"{}", headers={}) if traced
                              else client.post(url, data=b"{}", headers={}))
            async with response:
                await response.read()
        return (time.process_time() - started) / calls
    finally:
        await client.close()


async def main(calls: int, rounds: int) -> None:
    runner = await _serve()
    try:
        for _ in range(rounds):
            for traced in (True, False):
                cpu = await _cpu_per_call(traced, calls)
                label = "with the pool-wait trace" if traced else "no trace config"
                print(f"{label:26} {cpu * 1e6:6.1f} us CPU a call (client and server)")
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.calls, arguments.rounds))
