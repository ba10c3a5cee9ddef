"""B11's floor: the least any aiohttp relay costs, to set the gateway's own CPU against.

`open_bare_relay` runs, like the gateway, an aiohttp server and one pooled client session
on a thread of their own with uvloop when it is installed, and relays ``POST /v1/messages``
upstream the way the gateway does (body read, one ``session.post``, the answer's chunks
passed through as they arrive), but does nothing else: no token, no reservation, no
limiter, no usage scanning, no settlement, no events. Its CPU per request under the same
load is what relaying through aiohttp costs in this interpreter; the gateway's CPU beyond
it is the gateway's own bookkeeping.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from orchestrator.gateway.replies import client_headers, upstream_headers
from orchestrator.gateway.service import loop_factory

THREAD = "bare-relay"


@contextlib.asynccontextmanager
async def open_bare_relay(upstream: str, credential: tuple[str, str]) -> AsyncIterator[str]:
    """A bare relay to ``upstream`` for the block; yields its URL."""
    ready: concurrent.futures.Future[Any] = concurrent.futures.Future()
    thread = threading.Thread(target=_thread, args=(upstream, credential, ready), name=THREAD)
    thread.start()
    url, loop, stop = await asyncio.wrap_future(ready)
    try:
        yield str(url)
    finally:
        loop.call_soon_threadsafe(stop.set)
        await asyncio.to_thread(thread.join)


def _thread(
    upstream: str, credential: tuple[str, str], ready: concurrent.futures.Future[Any]
) -> None:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_serve(upstream, credential, ready))


async def _serve(
    upstream: str, credential: tuple[str, str], ready: concurrent.futures.Future[Any]
) -> None:
    stop = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def messages(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            headers = upstream_headers(request.headers.items(), credential)
            async with session.post(upstream + request.path, data=body, headers=headers) as up:
                out = web.StreamResponse(
                    status=up.status, headers=client_headers(up.headers.items())
                )
                await out.prepare(request)
                async for chunk in up.content.iter_any():
                    await out.write(chunk)
                await out.write_eof()
                return out

        app = web.Application()
        app.router.add_post("/v1/messages", messages)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0, backlog=2048)
            await site.start()
            port = runner.addresses[0][1]
            ready.set_result((f"http://127.0.0.1:{port}", asyncio.get_running_loop(), stop))
            await stop.wait()
        finally:
            await runner.cleanup()
