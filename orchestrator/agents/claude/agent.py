"""The Claude agent: a streaming tool-use loop over the Messages API, one client per run.

The only module that imports ``anthropic``, and lazily: the import (over a second) happens in
a worker thread the first time a claude agent runs, so ``--help``, ``validate``, ``status``
and scripted runs never pay for it and the event loop never stalls on it.

One `ClaudeAgent` serves every claude agent of a run (the pool builds it once): it owns the
``AsyncAnthropic`` client (made on first use, closed by `ClaudeAgent.aclose`), the run's
`orchestrator.agents.claude.limiter.ApiLimiter` and the price table. Each attempt is one `_Attempt`:

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

Money: before every request (retries included) an upper bound of its cost (input estimated
at 3 characters a token, plus ``max_tokens`` of output) is reserved with the run's governor;
a refusal sends nothing and fails the attempt with kind ``budget``. After the request a
`Usage` event reports what it really cost (the scheduler charges that) and the reservation
is released. Failures are classified by `orchestrator.agents.claude.sdk.classify` and
retried by the policy of `orchestrator.agents.claude.limiter`; a retried turn resends the
same conversation, and no tool runs from an incomplete reply.

The API key never reaches a tool (``run_command`` gets ``ctx.env``, from which
`orchestrator.tools.shell.command_env` removes it again), and its value is masked in everything a
tool returns before the model or a progress file sees it (``cat ~/.bashrc`` included).
"""

from __future__ import annotations

import asyncio
import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orchestrator.agents.base import AgentContext, Budget
from orchestrator.agents.claude.conversation import Conversation
from orchestrator.agents.claude.limiter import ApiLimiter, RetryPolicy
from orchestrator.agents.claude.pricing import PriceTable
from orchestrator.agents.claude.prompt import (
    tool_params,
)
from orchestrator.plan.model import Plan

if TYPE_CHECKING:
    import anthropic


@dataclass(frozen=True, slots=True)
class ClaudeSettings:
    """Knobs of the claude agent; the defaults suit real runs, tests shorten them."""

    max_tokens: int = 8192
    """Output tokens per request (and the output part of each budget reservation)."""
    read_timeout: float = 120.0
    """The SDK's timeout, which applies to each read: the API pings an idle stream."""
    connect_timeout: float = 10.0
    request_deadline: float = 600.0
    """Wall clock for one whole request, headers to last event (the SDK has none)."""
    command_timeout: float = 600.0
    """Ceiling of one ``run_command`` (the model may ask for less)."""
    requests_per_second: float = 50.0
    keepalive_connections: int = 16
    """Idle connections kept for reuse. The connection pool probes every idle connection's
    socket whenever a request starts or ends; with the SDK's default of 100, 200 agents
    finishing together spent a second of CPU in one loop turn (measured), with 8, half."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)


class ClaudeAgent:
    """Every claude agent of one run: the client, the limiter, the prices."""

    secrets: tuple[str, ...] = ()
    """The key stays in this process: its tools' commands never get it."""

    def __init__(self, plan: Plan, *, settings: ClaudeSettings | None = None) -> None:
        self.settings = settings or ClaudeSettings()
        self.prices = PriceTable(plan.prices)
        self.limiter = ApiLimiter(
            ceiling=max(plan.limits.max_concurrency, 1), rate=self.settings.requests_per_second
        )
        self.tools = tool_params()
        self.requests_sent = 0
        self.run_wide_failure: str | None = None
        """Set by a failure no request of this run can get past (a bad key, no credit)."""
        self._client: anthropic.AsyncAnthropic | None = None
        self._making = False
        self._made = asyncio.Event()
        self._settled = asyncio.Event()

    async def run(self, ctx: AgentContext) -> None:
        await Conversation(self, ctx).run()

    async def aclose(self) -> None:
        """Close the client (and its connections) if one was made."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def client(self) -> anthropic.AsyncAnthropic:
        """The run's client, made on first use (see `make_client`).

        The first caller makes it in a worker thread (the import takes over a second, the TLS
        context tens of milliseconds); the others wait on an event that wakes them all at
        once (a lock would hand over to them one loop turn each).
        """
        while self._client is None:
            if self._making:
                await self._made.wait()
                continue
            self._making = True
            try:
                self._client = await asyncio.to_thread(
                    make_client, self.settings, connections=self.limiter.ceiling
                )
            finally:
                self._making = False
                self._made.set()
                self._made = asyncio.Event()
        return self._client

    async def reserve(self, budget: Budget | None, amount: float) -> bool:
        """Hold ``amount`` of the run's budget; False when it cannot be had.

        While other requests hold reservations that would make room once settled, wait for
        them rather than fail: their real cost is usually far below their upper bound.
        """
        if budget is None:
            return True
        while not budget.reserve(amount):
            total = budget.budget_usd
            if (
                budget.stopping
                or total is None
                or budget.reserved_usd <= 0
                or amount > total - budget.spent_usd
            ):
                return False
            settled = self._settled
            try:
                async with asyncio.timeout(1.0):
                    await settled.wait()
            except TimeoutError:
                pass  # reservations by others (not ours to be told about): look again
        return True

    def settle(self, budget: Budget | None, reserved: float) -> None:
        """Release a reservation (the request's `Usage` event carries its cost)."""
        if budget is not None:
            budget.settle(reserved, 0.0)
        self._settled.set()
        self._settled = asyncio.Event()


def make_client(settings: ClaudeSettings, *, connections: int) -> anthropic.AsyncAnthropic:
    """An ``AsyncAnthropic`` that never retries by itself (the limiter's policy does).

    The SDK reads the key and the base URL from the environment (``ANTHROPIC_API_KEY``,
    ``ANTHROPIC_BASE_URL``). Synchronous, and slow the first time: run it in a thread.
    """
    sdk = importlib.import_module("anthropic")
    httpx = importlib.import_module("httpx2")
    limits = httpx.Limits(
        max_connections=max(connections, 1000),
        max_keepalive_connections=settings.keepalive_connections,
    )
    client: anthropic.AsyncAnthropic = sdk.AsyncAnthropic(
        max_retries=0,
        timeout=httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout),
        http_client=sdk.DefaultAsyncHttpxClient(limits=limits),
    )
    return client
