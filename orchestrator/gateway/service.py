"""The gateway as a service of the run: its own thread and event loop, and the API the
scheduler uses to give out tokens, take them back and stop traffic.

`open_gateway` starts a thread that runs an event loop with the gateway's HTTP server
(`orchestrator.gateway.server`) on ``127.0.0.1`` (an ephemeral port; also on a Unix socket
when the settings name one, for sandboxes without network) and its client to the upstream
API (`orchestrator.gateway.upstream`); it returns once the server listens and stops it (and
joins the thread) when the block ends. The server's work (parsing, relaying streams,
retries) thus never runs on the scheduler's loop; the two share only
`orchestrator.gateway.shared.Shared`.

The thread imports the server and httptools when it starts: a run whose agents never talk
to a model never pays for them, and ``--help`` or ``status`` never import them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Callable

from orchestrator.events import AgentEvent
from orchestrator.gateway.grants import Access, Grant, new_token
from orchestrator.gateway.ledger import Ledger
from orchestrator.gateway.pricing import PriceTable
from orchestrator.gateway.shared import GatewaySettings, Hooks, Shared, Upstream


class Gateway:
    """A running gateway. Every method is called from the scheduler's loop."""

    def __init__(self, shared: Shared, url: str, loop: asyncio.AbstractEventLoop) -> None:
        self.shared = shared
        self.url = url
        self._loop = loop
        self._by_agent: dict[str, Grant] = {}

    def open_grant(
        self,
        agent_id: str,
        *,
        deadline: float,
        emit: Callable[[AgentEvent], None],
        account: str | None = None,
    ) -> Grant:
        """A token for one attempt, good until `close_grant` (or a refusal)."""
        grant = Grant(agent_id, new_token(), deadline, emit, account)
        self._by_agent[agent_id] = grant
        self.shared.grants[grant.token] = grant
        if self.shared.ahead is not None:
            self._loop.call_soon_threadsafe(self.shared.ahead, len(self.shared.grants))
        return grant

    def access(self, grant: Grant) -> Access:
        shared = self.shared
        return Access(
            self.url, grant.token, anthropic=shared.upstream is not None,
            openai=shared.openai is not None,
        )  # fmt: skip

    async def close_grant(self, grant: Grant) -> None:
        """The attempt ended: refuse its token, cancel its requests in flight and wait until
        they have settled (so their usage reaches the agent before its end is recorded)."""
        grant.closed = True
        self.shared.grants.pop(grant.token, None)
        if self._by_agent.get(grant.agent_id) is grant:
            del self._by_agent[grant.agent_id]
        done = asyncio.run_coroutine_threadsafe(_drain(grant, self.shared.settings), self._loop)
        await asyncio.wrap_future(done)

    def refuse(self, agent_id: str, reason: str) -> None:
        """Refuse the agent's next request at once (it is being cancelled)."""
        grant = self._by_agent.get(agent_id)
        if grant is not None and grant.refused is None:
            grant.reason = reason
            grant.refused = "cancelled"

    def after_turn(self, agent_id: str) -> bool:
        """Let the agent's request in flight finish; refuse its next one and have the
        scheduler stop it then. False when the agent holds no grant."""
        grant = self._by_agent.get(agent_id)
        if grant is None:
            return False
        if grant.refused is None:
            grant.refused = "after_turn"
        return True

    def fence(self, reason: str) -> None:
        """Refuse every request from now on (cancel --all, the budget spent)."""
        if self.shared.fence is None:
            self.shared.fence = reason

    @property
    def stopped(self) -> str | None:
        return self.shared.stopped


async def _drain(grant: Grant, settings: GatewaySettings) -> None:
    """On the gateway's loop: cancel what still serves ``grant`` and wait for it to settle."""
    tasks = list(grant.in_flight)
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=settings.drain)


@contextlib.asynccontextmanager
async def open_gateway(
    *,
    upstream: Upstream | None,
    openai: Upstream | None = None,
    ledger: Ledger,
    prices: PriceTable,
    hooks: Hooks,
    settings: GatewaySettings,
    ceiling: int,
) -> AsyncIterator[Gateway]:
    """Run a gateway for the block (see the module's docstring)."""
    main = asyncio.get_running_loop()
    shared = Shared(
        upstream=upstream, openai=openai, ledger=ledger, prices=prices, hooks=hooks,
        settings=settings, ceiling=ceiling, main=main,
    )  # fmt: skip
    ready: concurrent.futures.Future[tuple[str, asyncio.AbstractEventLoop, asyncio.Event]]
    ready = concurrent.futures.Future()
    thread = threading.Thread(target=_thread, args=(shared, ready), name="gateway", daemon=True)
    thread.start()
    try:
        url, loop, stop = await asyncio.wrap_future(ready)
    except BaseException:
        await asyncio.to_thread(thread.join)
        raise
    try:
        yield Gateway(shared, url, loop)
    finally:
        loop.call_soon_threadsafe(stop.set)
        await asyncio.to_thread(thread.join)


def _thread(shared: Shared, ready: concurrent.futures.Future[object]) -> None:
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(_serve(shared, ready))
    except BaseException as exc:  # handed to the scheduler's side, which raises it
        if not ready.done():
            ready.set_exception(exc)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when it is installed (the ``fast`` extra): the gateway's work is
    relaying small events, where it costs about a fifth less CPU (B11); else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _serve(shared: Shared, ready: concurrent.futures.Future[object]) -> None:
    from orchestrator.gateway.proxy import Proxy
    from orchestrator.gateway.server import Server
    from orchestrator.gateway.upstream import UpstreamClient

    stop = asyncio.Event()
    settings = shared.settings
    client = UpstreamClient(
        connect_timeout=settings.connect_timeout, read_timeout=settings.read_timeout
    )
    if shared.upstream is not None:
        url = shared.upstream.url
        shared.ahead = lambda want: client.open_ahead(url, want)
    server = Server(Proxy(shared, client).handle, max_body=settings.max_body)
    try:
        port = await server.listen_tcp(settings.host)
        if settings.unix is not None:  # for sandboxes without network
            with contextlib.suppress(FileNotFoundError):
                os.unlink(settings.unix)  # a killed run's, at our pid's path
            await server.listen_unix(settings.unix)
        ready.set_result((f"http://{settings.host}:{port}", asyncio.get_running_loop(), stop))
        await stop.wait()
    finally:
        await server.close()
        client.close()
