"""The Claude agent: a streaming tool-use loop over the Messages API, one client per run.

The only module that imports ``anthropic``, and lazily: the import (over a second) happens in
a worker thread the first time a claude agent runs, so ``--help``, ``validate``, ``status``
and scripted runs never pay for it and the event loop never stalls on it.

One `ClaudeAgent` serves every claude agent of a run (the pool builds it once): it owns the
``AsyncAnthropic`` clients (made on first use, closed by `ClaudeAgent.aclose`; one per
``agents_per_client`` concurrent agents, see `ClaudeSettings`; their HTTP goes over
`orchestrator.agents.claude.transport`, the gateway's own client) and a local
`orchestrator.gateway.limiter.ApiLimiter` that paces how many requests the SDK builds per
turn of the event loop. Each attempt is one
`orchestrator.agents.claude.conversation.Conversation`:

- the system prompt holds the task, the workspace, what dependencies produced and how to
  finish or report a blocker (its text, and the renderings of tool calls and results, are
  `orchestrator.agents.claude.prompt`'s); the tools are
  `orchestrator.tools.calls.TOOL_SPECS`, run by `orchestrator.tools.calls.dispatch` in a
  `Workspace` that protects the responses directory;
- each turn streams one request: text deltas become `Text` events as they arrive, each tool
  call a `ToolCall` (a short rendering of its input) then a `ToolResult`;
- ``finish`` ends the attempt `Finished`, ``report_blocker`` `Blocked`; a reply that ends
  its turn without a tool call counts as finished, its last text as the summary (a model
  that stops talking has nothing more to do; asking again would spend turns to learn that);
  after ``task.max_turns`` requests the attempt fails with kind ``max_turns``.

Every request goes through the run's model gateway (`orchestrator.gateway`) with the
attempt's token (``ctx.model``), like any CLI agent's: the gateway reserves its worst case
against the budget, absorbs 429 and 529 storms, meters it (the agent's `Usage` events come
from there) and refuses it once the agent is cancelled. What still fails is classified by
`orchestrator.agents.claude.sdk.classify` and retried by the policy of
`orchestrator.gateway.limiter`; a retried turn resends the same conversation, and no tool
runs from an incomplete reply.

The API key is not in this process's requests at all (the gateway adds it upstream), never
reaches a tool (``run_command`` gets ``ctx.env``, which never holds it), and its value is
masked in everything a tool returns before the model or a progress file sees it.
"""

from __future__ import annotations

import asyncio
import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orchestrator.agents.base import AgentContext
from orchestrator.agents.claude.conversation import Conversation
from orchestrator.agents.claude.prompt import tool_params
from orchestrator.gateway.grants import Access
from orchestrator.gateway.limiter import ApiLimiter, RetryPolicy
from orchestrator.plan.model import Plan

if TYPE_CHECKING:
    import ssl

    import anthropic


@dataclass(frozen=True, slots=True)
class ClaudeSettings:
    """Knobs of the claude agent; the defaults suit real runs, tests shorten them."""

    max_tokens: int = 8192
    """Output tokens per request (and the output part of each budget reservation)."""
    read_timeout: float = 120.0
    """The SDK's timeout for each read once the answer has begun. Before it begins the
    gateway may be waiting out a rate-limit storm: that wait is bounded by the attempt's
    own deadline instead."""
    connect_timeout: float = 10.0
    request_deadline: float = 600.0
    """Wall clock for one whole request, headers to last event (the SDK has none)."""
    command_timeout: float = 600.0
    """Ceiling of one ``run_command`` (the model may ask for less)."""
    requests_per_second: float = 50.0
    agents_per_client: int = 16
    """Concurrent agents that share one client; a run makes ``max_concurrency /
    agents_per_client`` clients, and an attempt uses one of them. (It was chosen for the
    SDK's own connection pool, which walked all its connections whenever a request started
    or ended; the gateway transport's pool takes an idle connection without a walk, and one
    client for 500 agents measured the same as 32: B5 2.31-2.63 s against 2.18-2.66 s.)"""
    retry: RetryPolicy = field(default_factory=RetryPolicy)


class ClaudeAgent:
    """Every claude agent of one run: the client and the local limiter."""

    uses_model = True
    pass_env: tuple[str, ...] = ()

    def __init__(self, plan: Plan, *, settings: ClaudeSettings | None = None) -> None:
        self.settings = settings or ClaudeSettings()
        self.limiter = ApiLimiter(
            ceiling=max(plan.limits.max_concurrency, 1), rate=self.settings.requests_per_second
        )
        self.tools = tool_params()
        self.requests_sent = 0
        self.run_wide_failure: str | None = None
        """Set by a failure no request of this run can get past (a bad key, no credit)."""
        self._clients: list[anthropic.AsyncAnthropic] = []
        self._making = False
        self._made = asyncio.Event()
        self._attempts = 0

    async def run(self, ctx: AgentContext) -> None:
        await Conversation(self, ctx).run()

    @property
    def clients_made(self) -> int:
        """How many clients (connection pools) the run's attempts share out."""
        return len(self._clients)

    async def aclose(self) -> None:
        """Close the clients (and their connections) if any were made."""
        clients, self._clients = self._clients, []
        for client in clients:
            await client.close()

    async def client(self, access: Access) -> anthropic.AsyncAnthropic:
        """A client for one attempt, aimed at the gateway. The attempt's token is not in
        it: each request carries it (`orchestrator.agents.claude.sdk.auth_headers`).

        The run's clients are made on first use, all at once (see `make_clients`); attempts
        take them in turn. A copy per attempt with its token (``with_options``) cost each
        attempt the copy and a hop to a worker thread and back (a copy looks up the
        platform for its headers on its first request): B5 at 500 agents took 2.18-2.66 s
        without them, 2.51-2.82 s with them.

        The first caller makes them in a worker thread (the import takes over a second, the
        TLS context tens of milliseconds); the others wait on an event that wakes them all
        at once (a lock would hand over to them one loop turn each).
        """
        while not self._clients:
            if self._making:
                await self._made.wait()
                continue
            self._making = True
            try:
                self._clients = await asyncio.to_thread(
                    make_clients, self.settings, base_url=access.url,
                    concurrency=self.limiter.ceiling,
                )  # fmt: skip
            finally:
                self._making = False
                self._made.set()
                self._made = asyncio.Event()
        client = self._clients[self._attempts % len(self._clients)]
        self._attempts += 1
        return client


def clients_for(concurrency: int, agents_per_client: int) -> int:
    """How many clients a run of ``concurrency`` agents at once gets."""
    return max(1, -(-max(concurrency, 1) // max(agents_per_client, 1)))


def make_clients(
    settings: ClaudeSettings, *, base_url: str, concurrency: int
) -> list[anthropic.AsyncAnthropic]:
    """The run's clients (`clients_for` of them), sharing one TLS context."""
    import ssl  # here, not at the top: `--help` never loads it

    context = ssl.create_default_context()
    count = clients_for(concurrency, settings.agents_per_client)
    return [make_client(settings, base_url=base_url, tls=context) for _ in range(count)]


def make_client(
    settings: ClaudeSettings, *, base_url: str, tls: ssl.SSLContext | None = None
) -> anthropic.AsyncAnthropic:
    """An ``AsyncAnthropic`` aimed at the gateway that never retries by itself (the
    limiter's policy does), on the gateway transport
    (`orchestrator.agents.claude.transport`). Its key is a placeholder that the gateway
    refuses: each request carries its attempt's token instead
    (`orchestrator.agents.claude.sdk.auth_headers`).
    Synchronous, and slow the first time: run it in a thread.
    """
    sdk = importlib.import_module("anthropic")
    httpx = importlib.import_module("httpx2")
    transport = importlib.import_module("orchestrator.agents.claude.transport")
    client: anthropic.AsyncAnthropic = sdk.AsyncAnthropic(
        base_url=base_url,
        api_key="orchestrator-gateway",
        auth_token=None,
        max_retries=0,
        timeout=httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout),
        http_client=sdk.DefaultAsyncHttpxClient(
            transport=transport.GatewayTransport(
                connect_timeout=settings.connect_timeout, read_timeout=settings.read_timeout,
                tls=tls,
            )
        ),
    )  # fmt: skip
    return client
