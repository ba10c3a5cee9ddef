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
is released. Failures are classified by `classify` and retried by the policy of
`orchestrator.agents.claude.limiter`; a retried turn resends the same conversation, and no tool runs
from an incomplete reply.

The API key never reaches a tool (``run_command`` gets ``ctx.env``, from which
`orchestrator.tools.shell.command_env` removes it again), and its value is masked in everything a
tool returns before the model or a progress file sees it (``cat ~/.bashrc`` included).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.agents.base import AgentContext, Budget
from orchestrator.agents.claude.limiter import (
    ApiFailure,
    ApiLimiter,
    RetryPolicy,
    parse_retry_after,
    retry_delay,
)
from orchestrator.agents.claude.pricing import PriceTable, TokenCount
from orchestrator.agents.claude.prompt import (
    CUT_OFF,
    START,
    request_messages,
    summarize_input,
    summarize_result,
    system_blocks,
    text_block,
    tool_params,
)
from orchestrator.events import (
    AgentEvent,
    Blocked,
    Failed,
    Finished,
    Output,
    Started,
    Text,
    ToolCall,
    ToolResult,
    Usage,
)
from orchestrator.plan.model import Plan
from orchestrator.process.secrets import scrub_text, secret_values
from orchestrator.tools.calls import dispatch
from orchestrator.tools.workspace import Workspace

if TYPE_CHECKING:
    import anthropic
    from anthropic.types import Message

CHARS_PER_TOKEN = 3
"""For the upper bound of a request's input: real text runs 3.5 to 4 characters a token."""


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
        await _Attempt(self, ctx).run()

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


class _Attempt:
    """One attempt of one claude agent: its conversation and its turn loop."""

    def __init__(self, agent: ClaudeAgent, ctx: AgentContext) -> None:
        self.agent = agent
        self.ctx = ctx
        self.model = ctx.task.model
        self.system = system_blocks(ctx)
        self.messages: list[dict[str, Any]] = []
        self.chars = len(json.dumps(self.system)) + len(json.dumps(agent.tools))
        self.secrets = secret_values(ctx.env)
        self.warned: set[str] = set()
        self.partial = TokenCount()
        self.mid_line = False
        """Whether streamed text left a line open (for `say`)."""

    # --- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        ctx, task = self.ctx, self.ctx.task
        self.emit(Started(detail=f"claude {self.model}, up to {task.max_turns} turns"))
        workspace = Workspace(ctx.workspace, responses=ctx.responses)
        client = await self.agent.client()
        if client.api_key is None and client.auth_token is None and client.credentials is None:
            self.emit(Failed("ANTHROPIC_API_KEY is not set", kind="config"))
            return
        self.secrets = secret_values(ctx.env, client.api_key, client.auth_token)
        self._add("user", [text_block(START)])
        last_text = ""
        for _turn in range(task.max_turns):
            message = await self.exchange()
            if message is None:
                return  # a terminal event has been emitted
            text = "\n".join(b.text for b in message.content if b.type == "text").strip()
            last_text = text or last_text
            calls = [b for b in message.content if b.type == "tool_use"]
            if message.stop_reason == "max_tokens":
                # Cut off: the last tool call may be half written. Run nothing from it.
                self._add("assistant", _content(message, tools=False) or [text_block("(cut off)")])
                self._add("user", [text_block(CUT_OFF.format(self.agent.settings.max_tokens))])
                continue
            if message.stop_reason == "refusal":
                self.emit(Failed("the model declined the task (stop_reason: refusal)"))
                return
            if message.stop_reason == "model_context_window_exceeded":
                self.emit(Failed("the conversation outgrew the model's context window"))
                return
            if message.content:
                self._add("assistant", _content(message, tools=True))
            if message.stop_reason == "pause_turn":
                continue  # the API asks us to send the conversation back as it is
            if not calls:
                self.emit(Finished(last_text[:2000]))
                return
            results: list[dict[str, Any]] = []
            for call in calls:
                ended = await self.use_tool(workspace, call.id, call.name, call.input, results)
                if ended:
                    return
            self._add("user", results)
        self.emit(Failed(f"max turns ({task.max_turns}) reached", kind="max_turns"))

    async def use_tool(
        self,
        workspace: Workspace,
        call_id: str,
        name: str,
        args: object,
        results: list[dict[str, Any]],
    ) -> bool:
        """Run one tool call; True when it ended the attempt (finish, report_blocker)."""
        ctx = self.ctx
        self.emit(ToolCall(name, summarize_input(name, args)))
        outcome = await dispatch(
            workspace,
            name,
            args,
            env=ctx.env,
            timeout=self.agent.settings.command_timeout,
            on_output=lambda stream, line: self.emit(Output(line, stream)),
            on_start=ctx.on_process,
        )
        text = self.scrub(outcome.text)
        if outcome.end == "finished":
            self.emit(Finished(text))
            return True
        if outcome.end == "blocked":
            self.emit(Blocked(text))
            return True
        self.emit(ToolResult(name, summarize_result(name, text), outcome.is_error))
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
        block["content"] = text or "(no output)"
        if outcome.is_error:
            block["is_error"] = True
        results.append(block)
        return False

    # --- one turn: a request, retried -------------------------------------------------------

    async def exchange(self) -> Message | None:
        """The model's complete reply to the conversation, or None after a terminal event."""
        agent, ctx = self.agent, self.ctx
        policy = agent.settings.retry
        for attempt in range(policy.max_attempts):
            if agent.run_wide_failure is not None:
                self.emit(Failed(agent.run_wide_failure, kind="provider"))
                return None
            failure: ApiFailure | None = None
            message: Message | None = None
            async with agent.limiter.slot() as permit:
                estimate = agent.prices.upper_bound(
                    self.model,
                    input_tokens=self.chars // CHARS_PER_TOKEN + 1,
                    max_output=agent.settings.max_tokens,
                )
                if not await agent.reserve(ctx.budget, estimate):
                    self.emit(Failed(self._budget_refusal(estimate), kind="budget"))
                    return None
                self.partial = TokenCount()
                try:
                    message = await self.send()
                except Exception as exc:
                    failure = classify(exc)
                    if failure is None:
                        raise
                finally:
                    self._account(message, estimate)
                slow = failure is not None and failure.kind in ("rate_limit", "overload")
                hold = failure.retry_after if failure is not None else None
                if hold is not None:
                    hold = min(hold, policy.retry_after_cap)
                agent.limiter.report(
                    permit, "ok" if failure is None else "slow_down" if slow else "other",
                    retry_after=hold,
                )  # fmt: skip
            if failure is None:
                assert message is not None
                return message
            if failure.run_wide:
                agent.run_wide_failure = agent.run_wide_failure or failure.message
            delay = retry_delay(failure, attempt, policy)
            if delay is None:
                tries = "" if failure.kind == "fatal" else f" (gave up after {attempt + 1} tries)"
                self.emit(Failed(failure.message + tries, kind="provider"))
                return None
            wait = f"{delay:.1f} s" if delay >= 1 else f"{delay * 1000:.0f} ms"
            self.say(
                f"[{failure.message}; retrying in {wait} (try {attempt + 2} of "
                f"{policy.max_attempts})]"
            )
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: the policy gives up on the last attempt")

    async def send(self) -> Message:
        """Stream one request; text deltas are emitted as they arrive."""
        agent = self.agent
        client = await agent.client()
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": agent.settings.max_tokens,
            "system": self.system,
            "tools": agent.tools,
            "messages": request_messages(self.messages),
        }
        with warnings.catch_warnings(record=True) as caught:
            # Synchronous: nothing else runs in between. The SDK warns about deprecated
            # models here; the note goes to the progress file instead of the terminal.
            warnings.simplefilter("always")
            manager = client.messages.stream(**params)
        for w in caught:
            note = str(w.message).split("\n")[0]
            if note not in self.warned:
                self.warned.add(note)
                self.say(f"[note: {note}]")
        agent.requests_sent += 1
        async with asyncio.timeout(agent.settings.request_deadline), manager as stream:
            async for event in stream:
                if event.type == "text" and event.text:
                    self.emit(Text(event.text))
                elif event.type == "message_start":
                    self.partial = _tokens(event.message.usage)
            final: Message = await stream.get_final_message()
        return final

    # --- bookkeeping ------------------------------------------------------------------------

    def _account(self, message: Message | None, reserved: float) -> None:
        """Report what the request cost, then release its reservation.

        A request that failed after its stream started is charged the input the API
        reported at ``message_start``: whether it is billed is not ours to know, and a
        budget errs on the side of spending less.
        """
        tokens = _tokens(message.usage) if message is not None else self.partial
        if tokens.total_in or tokens.output:
            cost = self.agent.prices.cost(self.model, tokens)
            self.emit(Usage(tokens.total_in, tokens.output, cost))
        self.agent.settle(self.ctx.budget, reserved)

    def _budget_refusal(self, estimate: float) -> str:
        budget = self.ctx.budget
        total = budget.budget_usd if budget is not None else None
        if budget is None or total is None:
            return "budget: the run is stopping; the request was not sent"
        left = max(total - budget.spent_usd, 0.0)
        return (
            f"budget: the next request may cost up to ${estimate:.4f}, "
            f"${left:.4f} of ${total:.2f} is left; not sent"
        )

    def _add(self, role: str, content: list[dict[str, Any]]) -> None:
        message = {"role": role, "content": content}
        self.messages.append(message)
        self.chars += len(json.dumps(message))

    def emit(self, event: AgentEvent) -> None:
        """Every event of the attempt goes through here, the key masked in its text."""
        self.ctx.emit(event)  # the scheduler masks the key in every event
        # The progress file ends an open line before any event but Text.
        self.mid_line = isinstance(event, Text) and not event.text.endswith("\n")

    def say(self, line: str) -> None:
        """A line of the agent's own (a retry, a note), never glued to streamed text."""
        self.emit(Text(("\n" if self.mid_line else "") + line + "\n"))

    def scrub(self, text: str) -> str:
        return scrub_text(text, self.secrets)


# --- failures ---------------------------------------------------------------------------------

_FATAL_MID_STREAM = frozenset(
    {"invalid_request_error", "authentication_error", "permission_error", "billing_error"}
)


def classify(exc: BaseException) -> ApiFailure | None:
    """What a failed request means for retrying it; None for exceptions that are bugs.

    Mid-stream, this SDK raises transport errors raw (``httpx2.ReadTimeout``,
    ``httpx2.RemoteProtocolError``), not as ``APIConnectionError`` (anthropic-sdk-python
    issue #1919), and an ``error`` event as a bare ``APIStatusError`` whose status is the
    stream's 200. Before the stream, a 529 is ``OverloadedError`` and a read timeout
    ``APITimeoutError``. Auth and billing failures are run-wide: no later request of the run
    is sent with the same key.
    """
    import anthropic
    import httpx2

    if isinstance(exc, anthropic.APIStatusError):
        status, kind = exc.status_code, str(exc.type or "error")
        detail = " ".join(str(exc.api_message or exc.message).split())[:300]
        line = f"API {status} {kind}: {detail}" if status != 200 else f"API {kind}: {detail}"
        retry_after = parse_retry_after(exc.response.headers)
        billing = kind == "billing_error" or status == 402 or "credit balance" in detail.lower()
        if status == 200:
            if kind in _FATAL_MID_STREAM:
                return ApiFailure("fatal", f"{line} (mid-stream)")
            return ApiFailure("overload", f"{line} (mid-stream)", retry_after)
        if status == 401:
            return ApiFailure("fatal", f"{line} (check ANTHROPIC_API_KEY)", run_wide=True)
        if billing:
            return ApiFailure("fatal", f"{line} (billing)", run_wide=True)
        if status == 429:
            return ApiFailure("rate_limit", line, retry_after)
        if status in (503, 529) or kind == "overloaded_error":
            return ApiFailure("overload", line, retry_after)
        if status in (408, 409) or status >= 500:
            return ApiFailure("transient", line, retry_after)
        return ApiFailure("fatal", line)
    if isinstance(exc, anthropic.APITimeoutError):
        return ApiFailure("transient", "API request timed out before the answer began")
    if isinstance(exc, anthropic.APIConnectionError):
        cause = exc.__cause__
        why = f": {type(cause).__name__}" if cause is not None else ""
        return ApiFailure("transient", f"API connection failed{why}")
    if isinstance(exc, httpx2.TimeoutException):
        return ApiFailure("transient", f"API stream stalled ({type(exc).__name__})")
    if isinstance(exc, httpx2.RequestError):
        return ApiFailure("transient", f"API stream broke off ({type(exc).__name__}: {exc})")
    if isinstance(exc, TimeoutError):
        return ApiFailure("transient", "API request passed its deadline")
    if isinstance(exc, OSError):
        return ApiFailure("transient", f"API connection failed: {exc}")
    return None


# --- SDK values to plain data -----------------------------------------------------------------


def _content(message: Message, *, tools: bool) -> list[dict[str, Any]]:
    """The reply's blocks as request parameters (what is sent back in the next turn)."""
    blocks: list[dict[str, Any]] = []
    for b in message.content:
        if b.type == "text" and b.text:
            blocks.append(text_block(b.text))
        elif b.type == "tool_use" and tools:
            blocks.append({"type": "tool_use", "id": b.id, "name": b.name, "input": b.input})
    return blocks


def _tokens(usage: Any) -> TokenCount:
    """The SDK's ``Usage`` (streamed or final) as a `TokenCount`; absent fields count 0."""
    creation = getattr(usage, "cache_creation", None)
    return TokenCount(
        input=int(getattr(usage, "input_tokens", 0) or 0),
        output=int(getattr(usage, "output_tokens", 0) or 0),
        cache_write=int(getattr(usage, "cache_creation_input_tokens", 0) or 0),
        cache_write_1h=int(getattr(creation, "ephemeral_1h_input_tokens", 0) or 0),
        cache_read=int(getattr(usage, "cache_read_input_tokens", 0) or 0),
    )
