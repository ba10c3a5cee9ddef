"""B11's references: a relay built on aiohttp, and the least any relay in this interpreter
costs, to set the gateway's own figures against.

`open_bare_relay` runs, as the gateway did until it had a server and client of its own, an
aiohttp server and one pooled client session on a thread of their own with uvloop when it
is installed, and relays ``POST /v1/messages`` upstream (body read, one ``session.post``,
the answer's chunks passed through as they arrive), but does nothing else: no token, no
reservation, no limiter, no usage scanning, no settlement, no events. Its CPU per request
under the same load is what relaying through aiohttp costs in this interpreter, with no
bookkeeping at all. `open_byte_pipe` goes further down: it copies bytes
between sockets and knows nothing of HTTP, so the latency it adds is what one more hop
through a Python thread costs on this machine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, cast

import aiohttp
from aiohttp import web

from orchestrator.gateway.replies import client_headers, upstream_headers
from orchestrator.gateway.service import loop_factory

THREAD = "bare-relay"


def open_bare_relay(
    upstream: str, credential: tuple[str, str]
) -> contextlib.AbstractAsyncContextManager[str]:
    """A bare relay to ``upstream`` for the block; yields its URL."""
    return _on_thread(THREAD, lambda ready: _serve(upstream, credential, ready))


@contextlib.asynccontextmanager
async def _on_thread(
    name: str, serve: Callable[[concurrent.futures.Future[Any]], Coroutine[Any, Any, None]]
) -> AsyncIterator[str]:
    """``serve`` on a thread and loop of its own for the block; yields the URL it reports."""
    ready: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def run() -> None:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(serve(ready))

    thread = threading.Thread(target=run, name=name)
    thread.start()
    url, loop, stop = await asyncio.wrap_future(ready)
    try:
        yield str(url)
    finally:
        loop.call_soon_threadsafe(stop.set)
        await asyncio.to_thread(thread.join)


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


PIPE_THREAD = "byte-pipe"


def open_byte_pipe(upstream: str) -> contextlib.AbstractAsyncContextManager[str]:
    """The floor of any relay in this interpreter: a thread whose loop copies bytes between
    each client's connection and one upstream connection of its own, as they arrive, with
    no HTTP at all (no parsing, no key, nothing read). Yields its URL."""
    return _on_thread(PIPE_THREAD, lambda ready: _pipe(upstream, ready))


class _Pipe(asyncio.Protocol):
    """One side of a piped connection: what it receives goes to its peer's transport."""

    def __init__(self, peer: _Pipe | None = None) -> None:
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.peer is None or self.peer.transport is None:
            self.early.append(data)
        else:
            self.peer.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def _pipe(upstream: str, ready: concurrent.futures.Future[Any]) -> None:
    from urllib.parse import urlsplit

    where = urlsplit(upstream)
    host, port = where.hostname or "127.0.0.1", where.port or 80
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    linking: set[asyncio.Task[None]] = set()

    class Client(_Pipe):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            linking.add(task := loop.create_task(self.link()))
            task.add_done_callback(linking.discard)

        async def link(self) -> None:
            _, up = await loop.create_connection(lambda: _Pipe(self), host, port)
            self.peer = up
            assert up.transport is not None
            for data in self.early:
                up.transport.write(data)
            self.early.clear()

    server = await loop.create_server(Client, "127.0.0.1", 0, backlog=2048)
    try:
        mine = server.sockets[0].getsockname()[1]
        ready.set_result((f"http://127.0.0.1:{mine}", loop, stop))
        await stop.wait()
    finally:
        server.close()
