"""The web view's server: a page, its WebSocket feed and its controls, on 127.0.0.1 only.

Every request carries the random token of the URL printed at start (query ``token`` or the
``X-Orchestrator-Token`` header), or gets 403; so does a request whose ``Host`` is not this
server (DNS rebinding). Requests that change something (cancel) must carry the token in the
header and, when the browser sends one, an ``Origin`` of this server. The page and its script
ship in the package; nothing is fetched from elsewhere.

`orchestrator serve` runs it; `run --web` starts `serve` as a child process
(`open_in_process`), so a busy page never slows the run: the two share no state, only the
run's files and its control socket, like any other terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.control import channel
from orchestrator.errors import RunError
from orchestrator.process.capture import release, start_child
from orchestrator.process.group import stop_group
from orchestrator.records.history import RunEntry, list_runs
from orchestrator.web.feed import Feed, read_progress

if TYPE_CHECKING:
    from aiohttp import web

TOKEN_HEADER = "X-Orchestrator-Token"
START_TIMEOUT = 30.0
"""How long `run --web` waits for its web server to say where it listens."""
STOP_GRACE = 5.0
"""How long the web server may take to send the final state before it is killed."""
SEND_TIMEOUT = 10.0
"""A client that cannot take a message for this long is disconnected."""


@dataclass
class WebServer:
    responses: Path
    """The run the page follows live (the current run, or the one `serve --run` named)."""
    history: Path | None = None
    """The responses directory whose runs the page lists (None: ``responses``)."""
    token: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    port: int = 0
    feed: Feed = field(init=False)
    _sent: dict[int, int] = field(init=False, default_factory=dict)
    """Per connected client: the state version it was last sent."""
    _delivered: asyncio.Event = field(init=False, default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.feed = Feed(self.responses)

    async def flush(self, patience: float) -> None:
        """Publish the newest state and give every client up to ``patience`` s to get it."""
        await self.feed.refresh()
        try:
            async with asyncio.timeout(patience):
                while any(v < self.feed.version for v in self._sent.values()):
                    self._delivered.clear()
                    await self._delivered.wait()
        except TimeoutError:
            pass

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?token={self.token}"

    def app(self) -> web.Application:
        from aiohttp import web

        app = web.Application(middlewares=[self._guard], client_max_size=64 * 1024)
        app.router.add_get("/", self._page)
        app.router.add_get("/api/state", self._state)
        app.router.add_get("/ws", self._socket)
        app.router.add_post("/api/cancel", self._cancel)
        app.router.add_get("/api/runs", self._runs)
        app.router.add_get("/api/runs/{run_id}", self._past_run)
        app.router.add_get("/api/runs/{run_id}/progress", self._past_progress)
        return app

    # --- guards ------------------------------------------------------------------------------

    @property
    def _guard(self) -> Any:
        from aiohttp import web

        @web.middleware
        async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
            hosts = {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}
            given = request.query.get("token") or request.headers.get(TOKEN_HEADER) or ""
            if request.host not in hosts or not secrets.compare_digest(given, self.token):
                raise web.HTTPForbidden(text="forbidden: open the URL the server printed\n")
            if request.method != "GET":
                header = request.headers.get(TOKEN_HEADER, "")
                origin = request.headers.get("Origin")
                origins = {f"http://{h}" for h in hosts}
                if not secrets.compare_digest(header, self.token) or (
                    origin is not None and origin not in origins
                ):
                    raise web.HTTPForbidden(text="forbidden: token header or origin\n")
            response: web.StreamResponse = await handler(request)
            response.headers["Cache-Control"] = "no-store"
            return response

        return guard

    # --- handlers ------------------------------------------------------------------------------

    async def _page(self, request: web.Request) -> web.Response:
        from aiohttp import web

        page = resources.files("orchestrator.web").joinpath("page.html").read_text("utf-8")
        csp = (
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
            "connect-src 'self'; img-src 'self' data:"
        )
        return web.Response(
            text=page, content_type="text/html", headers={"Content-Security-Policy": csp}
        )

    async def _state(self, request: web.Request) -> web.Response:
        from aiohttp import web

        await self.feed.wait_newer(0, 5.0)
        return web.Response(text=self.feed.text, content_type="application/json")

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        from aiohttp import WSMsgType, web

        # no per-message deflate: on loopback it would only cost the CPU the run needs
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=64 * 1024, compress=False)
        await ws.prepare(request)
        follow: dict[str, Any] = {"agent": None, "offset": 0}
        patches = request.query.get("patches") == "1"
        async with asyncio.TaskGroup() as tg:
            sender = tg.create_task(self._send_loop(ws, follow, patches=patches))
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    ask = json.loads(msg.data)
                except ValueError:
                    continue
                if isinstance(ask, dict) and ask.get("op") == "follow":
                    agent, offset = ask.get("agent"), ask.get("offset", 0)
                    if isinstance(agent, str | None) and isinstance(offset, int) and offset >= 0:
                        follow.update(agent=agent, offset=offset)
            sender.cancel()
        return ws

    async def _send_loop(
        self, ws: web.WebSocketResponse, follow: dict[str, Any], *, patches: bool
    ) -> None:
        """This client's sender: the newest state when it changes (with ``patches``: whole
        once, then what changed since the version it was sent), its followed file as it
        grows. Waiting on this client never holds up the feed or another client."""
        sent = svg = 0
        self._sent[id(ws)] = 0
        try:
            while not ws.closed:
                if self.feed.svg_version > svg:
                    svg = self.feed.svg_version
                    async with asyncio.timeout(SEND_TIMEOUT):
                        await ws.send_str(self.feed.svg)
                if self.feed.version > sent:
                    frame = self.feed.frame
                    text = frame.patch(sent) if patches and sent else frame.text
                    sent = frame.version
                    async with asyncio.timeout(SEND_TIMEOUT):
                        await ws.send_str(text)
                    self._sent[id(ws)] = sent
                    self._delivered.set()
                agent = follow["agent"]
                if agent is not None:
                    got = await asyncio.to_thread(
                        read_progress, self.responses, agent, follow["offset"]
                    )
                    if got is not None and got[0] > follow["offset"]:
                        start, (follow["offset"], text) = follow["offset"], got
                        message = {"type": "progress", "agent": agent, "offset": start,
                                   "next": follow["offset"], "text": text}  # fmt: skip
                        async with asyncio.timeout(SEND_TIMEOUT):
                            await ws.send_str(json.dumps(message))
                        continue  # more may be waiting: read again at once
                await self.feed.wait_newer(sent, 0.1)
        except (TimeoutError, ConnectionError):
            await ws.close()
        finally:
            self._sent.pop(id(ws), None)
            self._delivered.set()

    # --- run history (read-only) ----------------------------------------------------------------

    def _entries(self) -> list[RunEntry]:
        return list_runs(self.history or self.responses)

    async def _runs(self, request: web.Request) -> web.Response:
        """Every run of the responses directory, newest first; ``followed`` marks the one this
        page follows live (a past run is opened with ``/?run=ID``, read-only)."""
        from aiohttp import web

        entries = await asyncio.to_thread(self._entries)
        here = self.responses.resolve()
        runs = [
            {k: v for k, v in e.as_json().items() if k != "responses"}
            | {"followed": e.where.resolve() == here}
            for e in reversed(entries)
        ]
        return web.json_response({"runs": runs})

    async def _where(self, request: web.Request) -> Path:
        from aiohttp import web

        wanted = request.match_info["run_id"]
        for entry in await asyncio.to_thread(self._entries):
            if entry.run_id == wanted:
                return entry.where
        raise web.HTTPNotFound(text=f"no run {wanted!r}\n")

    async def _past_run(self, request: web.Request) -> web.Response:
        """One run's state and timeline, read once from its journal (no feed, no controls)."""
        from aiohttp import web

        where = await self._where(request)
        text = await asyncio.to_thread(Feed(where).picture)
        return web.Response(text=text, content_type="application/json")

    async def _past_progress(self, request: web.Request) -> web.Response:
        """Up to a chunk of one agent's progress file of that run, from ``offset``."""
        from aiohttp import web

        where = await self._where(request)
        agent = request.query.get("agent", "")
        try:
            offset = int(request.query.get("offset", "0"))
        except ValueError:
            offset = -1
        if offset < 0:
            return web.json_response({"ok": False, "error": "offset: a number >= 0"}, status=400)
        got = await asyncio.to_thread(read_progress, where, agent, offset)
        if got is None:
            return web.json_response({"ok": False, "error": f"no agent {agent!r}"}, status=404)
        return web.json_response({"ok": True, "agent": agent, "offset": offset,
                                  "next": got[0], "text": got[1]})  # fmt: skip

    async def _cancel(self, request: web.Request) -> web.Response:
        from aiohttp import web

        try:
            ask = await request.json()
        except ValueError:
            ask = None
        if not isinstance(ask, dict):
            return web.json_response({"ok": False, "error": "a JSON object"}, status=400)
        if ask.get("run") is not None and ask.get("run") != self.feed.run_id:
            return web.json_response({"ok": False, "error": "a past run is read-only"}, status=409)
        agents = ask.get("agents")
        if ask.get("all") is True:
            payload: dict[str, Any] = {"op": "cancel_all"}
        elif isinstance(agents, list) and agents and all(isinstance(a, str) for a in agents):
            payload = {"op": "cancel", "agents": agents, "tree": ask.get("tree") is True}
            if ask.get("after_turn") is True:  # the answer in flight finishes first
                payload["after_turn"] = True
        else:
            return web.json_response({"ok": False, "error": "agents or all"}, status=400)
        answer = await asyncio.to_thread(channel.request_live, self.feed.rundir, payload)
        if answer is None:
            return web.json_response({"ok": False, "error": "no orchestrator runs"}, status=409)
        return web.json_response(answer, status=200 if answer.get("ok") else 400)


@contextlib.asynccontextmanager
async def open_server(server: WebServer) -> AsyncIterator[WebServer]:
    """Serve until the block ends; ``server.port`` is the bound port inside it."""
    from aiohttp import web

    runner = web.AppRunner(server.app(), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", server.port)
        await site.start()
        server.port = int(runner.addresses[0][1])
        async with asyncio.TaskGroup() as tg:
            feed = tg.create_task(server.feed.run())
            try:
                yield server
            finally:
                await server.flush(patience=2.0)  # pages see how the run ended
                feed.cancel()
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def open_in_process(responses: Path, *, port: int = 0) -> AsyncIterator[str]:
    """`orchestrator serve` for ``responses`` in a child process, for the length of the block;
    yields its URL. A process of its own, so the page's work never competes with the run's
    event loop (nor its GIL); it ends with the block (SIGTERM: it sends the pages the final
    state first), and with the orchestrator if that is killed (a parent-death signal)."""
    proc = await start_child(
        sys.executable, "-m", "orchestrator", "serve", "--responses", str(responses),
        "--port", str(port), "--parent", str(os.getpid()),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        start_new_session=True,  # Ctrl-C is the run's to handle; it stops the server
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(START_TIMEOUT):
            line = (await proc.stdout.readline()).decode("utf-8", "replace")
        url = line.rsplit(" at ", 1)[-1].strip()
        if not url.startswith("http://127.0.0.1:"):
            raise RunError(f"error: the web server did not start: {line.strip() or 'no answer'}")
        yield url
    finally:
        await stop_group(proc, grace=STOP_GRACE)
        release(proc)


async def serve_forever(server: WebServer, *, ready: Callable[[WebServer], None]) -> None:
    """`orchestrator serve`: until SIGTERM (a clean end: pages get the final state first) or
    Ctrl-C."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        async with open_server(server):
            ready(server)
            await stop.wait()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
