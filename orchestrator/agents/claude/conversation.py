"""One attempt of a claude agent: the conversation, turn by turn, with its tools.

Each turn streams one request through the run's model gateway (which reserves it against
the budget and meters it); tool calls run in the workspace and their results go back in the
next turn. See `orchestrator.agents.claude.agent` for the whole contract.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from typing import TYPE_CHECKING, Any

from orchestrator.agents.base import AgentContext
from orchestrator.agents.claude import sdk
from orchestrator.agents.claude.prompt import (
    CUT_OFF,
    START,
    request_messages,
    summarize_input,
    summarize_result,
    system_blocks,
    text_block,
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
)
from orchestrator.gateway.limiter import ApiFailure, retry_delay
from orchestrator.process.secrets import scrub_text, secret_values
from orchestrator.tools.calls import dispatch
from orchestrator.tools.workspace import Workspace

if TYPE_CHECKING:
    import anthropic
    from anthropic.types import Message

    from orchestrator.agents.claude.agent import ClaudeAgent


class Conversation:
    """One attempt of one claude agent: its conversation and its turn loop."""

    def __init__(self, agent: ClaudeAgent, ctx: AgentContext) -> None:
        self.agent = agent
        self.ctx = ctx
        self.model = ctx.task.model
        self.system = system_blocks(ctx)
        self.messages: list[dict[str, Any]] = []
        self.secrets = secret_values(ctx.env)
        self.warned: set[str] = set()
        self.deadline = time.monotonic() + ctx.task.timeout
        self.client: anthropic.AsyncAnthropic
        self.headers: dict[str, str] = {}
        """The attempt's token, sent with each of its requests (the client is shared)."""
        self.mid_line = False
        """Whether streamed text left a line open (for `say`)."""

    # --- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        ctx, task = self.ctx, self.ctx.task
        self.emit(Started(detail=f"claude {self.model}, up to {task.max_turns} turns"))
        workspace = Workspace(ctx.workspace, responses=ctx.responses)
        if ctx.model is None:
            why = "no model gateway in this run (ANTHROPIC_API_KEY is not set)"
            self.emit(Failed(why, kind="config"))
            return
        self.client = await self.agent.client(ctx.model)
        self.headers = sdk.auth_headers(ctx.model)
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
                cut = sdk.content(message, tools=False) or [text_block("(cut off)")]
                self._add("assistant", cut)
                self._add("user", [text_block(CUT_OFF.format(self.agent.settings.max_tokens))])
                continue
            if message.stop_reason == "refusal":
                self.emit(Failed("the model declined the task (stop_reason: refusal)"))
                return
            if message.stop_reason == "model_context_window_exceeded":
                self.emit(Failed("the conversation outgrew the model's context window"))
                return
            if message.content:
                self._add("assistant", sdk.content(message, tools=True))
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
            on_activity=ctx.on_activity,
            sandbox=ctx.sandbox,
            add_task=ctx.add_task,
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
        agent = self.agent
        policy = agent.settings.retry
        for attempt in range(policy.max_attempts):
            if agent.run_wide_failure is not None:
                self.emit(Failed(agent.run_wide_failure, kind="provider"))
                return None
            failure: ApiFailure | None = None
            message: Message | None = None
            async with agent.limiter.slot() as permit:
                try:
                    message = await self.send()
                except Exception as exc:
                    failure = sdk.classify(exc)
                    if failure is None:
                        raise
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
        """Stream one request; text deltas are emitted as they arrive.

        Until the answer begins, the gateway may be waiting out a rate-limit storm for us:
        the SDK's timeout is then the attempt's time left, not one read's.
        """
        agent = self.agent
        waiting = max(self.deadline - time.monotonic(), agent.settings.read_timeout)
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
            manager = self.client.messages.stream(
                **params, timeout=waiting, extra_headers=self.headers
            )
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
            final: Message = await stream.get_final_message()
        return final

    # --- bookkeeping ------------------------------------------------------------------------

    def _add(self, role: str, content: list[dict[str, Any]]) -> None:
        self.messages.append({"role": role, "content": content})

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
