"""`orchestrator plan "GOAL"`: a model drafts a plan file; the plan loader judges it.

The model is asked through the same path a run's ``claude`` agents use: a model gateway
started for the command (`orchestrator.engine.models.ModelTraffic`, which holds the API key)
and the ``claude`` kind's client with a token of its own, so the key never leaves the
gateway. It gets the goal and a short look at the workspace (`orchestrator.drafting.survey`)
and answers with YAML. Each draft is written beside the output file (``.NAME.draft.yaml``,
so a relative ``workspace:`` means the same) and loaded by the plan loader
(`orchestrator.plan.load.load_plan`), exactly as `validate` would, its errors named after the
output file; while it does not load, the errors go back to the model, at most
`MAX_CORRECTIONS` times, then to the user (exit 2). The output file is written only then,
with the valid plan or the last draft (so the ``file:line`` of the errors point at
something); a model that does not answer leaves it as it was. Nothing runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from orchestrator.agents.claude.agent import ClaudeAgent
from orchestrator.agents.claude.sdk import auth_headers
from orchestrator.drafting.survey import survey
from orchestrator.engine.models import ModelTraffic
from orchestrator.engine.state import AgentRecord, RunSettings
from orchestrator.errors import Location, MissingApiKeyError, PlanError, PlanErrors, RunError
from orchestrator.events import AgentEvent, Usage
from orchestrator.gateway.ledger import Ledger
from orchestrator.gateway.shared import GatewaySettings, Upstream
from orchestrator.plan.load import load_plan
from orchestrator.plan.model import Limits, Plan, Task

MAX_CORRECTIONS = 2
MAX_TOKENS = 8000
DRAFTER = "planner"
Ask = Callable[[list[dict[str, Any]]], Awaitable[str]]

INSTRUCTIONS = """\
You write plan files for `orchestrator`, a tool that runs a fleet of coding agents from a plan.
Answer with the whole plan as YAML in one ```yaml block and nothing else. The plan format:

name: short-name
workspace: {workspace}          # exactly this: where the agents work, relative to the plan file
defaults: {{agent: claude, model: {model}, timeout: 20m}}
limits: {{max_concurrency: 4, max_agents: 20, max_depth: 2, budget_usd: 10}}
build: {{command: <the command that checks the work>, max_fix_cycles: 2}}
fixer: {{agent: claude}}
tasks:
  - id: models                  # 1-64 letters, digits, '.', '_', '-'; unique
    prompt: <what this agent must do, self-contained: files, interfaces, how to check>
  - id: api
    depends_on: [models]        # ids of tasks that must succeed first; no cycles
    prompt: ...

Rules: split the goal into tasks one agent can finish in one sitting; tasks that touch
different files run in parallel, so only add depends_on where a task needs another's result;
every prompt names the files it owns. Use the build command given below when there is one.
Keep max_agents at least 3x the number of tasks (retries and fixers count)."""


@dataclass(frozen=True)
class Drafted:
    plan: Plan
    corrections: int
    """How many times the errors went back to the model."""
    cost_usd: float
    tokens_in: int
    tokens_out: int


async def draft_plan(
    goal: str,
    *,
    workspace: Path,
    output: Path,
    env: dict[str, str],
    model: str,
    gateway: GatewaySettings | None = None,
) -> Drafted:
    """Draft, write and validate a plan for ``goal``; `PlanErrors` when the model's last try
    still does not load (the draft stays in ``output``)."""
    look = await asyncio.to_thread(survey, workspace)
    rel = await asyncio.to_thread(os.path.relpath, workspace, output.parent.resolve())
    system = INSTRUCTIONS.format(workspace=rel, model=model)
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": f"Goal: {goal}\n\nThe workspace:\n\n{look.text()}"}
    ]
    meter = _Meter()
    scratch = output.with_name(f".{output.stem}.draft{output.suffix}")
    try:
        async with open_model(env, model=model, system=system, meter=meter, gateway=gateway) as ask:
            return await _rounds(ask, messages, scratch, output, workspace, meter)
    finally:
        await asyncio.to_thread(scratch.unlink, missing_ok=True)


async def _rounds(
    ask: Ask,
    messages: list[dict[str, Any]],
    scratch: Path,
    output: Path,
    workspace: Path,
    meter: _Meter,
) -> Drafted:
    """Ask, judge, and send the errors back, up to `MAX_CORRECTIONS` times."""
    for attempt in range(MAX_CORRECTIONS + 1):
        reply = await ask(messages)
        await asyncio.to_thread(scratch.write_text, yaml_of(reply), "utf-8")
        try:
            plan = await asyncio.to_thread(_load, scratch, output, workspace)
        except PlanErrors as exc:
            if attempt == MAX_CORRECTIONS:
                await asyncio.to_thread(os.replace, scratch, output)
                raise
            messages += [
                {"role": "assistant", "content": reply},
                {"role": "user", "content": "The plan does not validate:\n" + str(exc)
                 + "\nAnswer with the whole corrected plan."},
            ]  # fmt: skip
            continue
        await asyncio.to_thread(os.replace, scratch, output)
        return Drafted(plan, attempt, meter.cost, meter.tokens_in, meter.tokens_out)
    raise AssertionError("unreachable")  # pragma: no cover


def _load(scratch: Path, output: Path, workspace: Path) -> Plan:
    """The draft in ``scratch`` as a plan, its errors named after ``output``."""
    try:
        plan = load_plan(scratch)
    except PlanErrors as exc:
        raise PlanErrors([
            PlanError(Location(str(output), e.where.line, e.where.col), e.rule, e.message, e.hint)
            for e in exc.errors
        ]) from None  # fmt: skip
    if plan.workspace != workspace.resolve():
        rel = os.path.relpath(workspace, output.parent.resolve())
        raise PlanErrors([PlanError(Location(str(output), 1, 1), "workspace",
                          f"the plan's workspace is {plan.workspace}, not {workspace.resolve()}",
                          f"write workspace: {rel}")])  # fmt: skip
    name = output.stem if plan.name == scratch.stem else plan.name
    return replace(plan, name=name, source=Path(os.path.abspath(output)))


def yaml_of(reply: str) -> str:
    """The YAML of a reply: its first fenced block, else all of it."""
    fenced = re.search(r"```(?:ya?ml)?[ \t]*\n(.*?)```", reply, re.DOTALL)
    text = fenced.group(1) if fenced else reply
    return text.strip() + "\n"


class _Meter:
    """What the gateway metered for the drafter's requests."""

    def __init__(self) -> None:
        self.cost = 0.0
        self.tokens_in = 0
        self.tokens_out = 0

    def __call__(self, event: AgentEvent) -> None:
        if isinstance(event, Usage):
            self.cost += event.cost_usd
            self.tokens_in += event.tokens_in
            self.tokens_out += event.tokens_out


@contextlib.asynccontextmanager
async def open_model(
    env: dict[str, str],
    *,
    model: str,
    system: str,
    meter: Callable[[AgentEvent], None],
    gateway: GatewaySettings | None = None,
) -> AsyncIterator[Ask]:
    """A gateway for this command and the claude client through it, as a function that sends
    the conversation and returns the reply's text."""
    if Upstream.from_env(env) is None:
        raise MissingApiKeyError(
            "error: orchestrator plan asks a model, but ANTHROPIC_API_KEY is not set "
            "(hint: export it; the key stays in the orchestrator's gateway)"
        )
    task = Task(DRAFTER, agent="claude", model=model, timeout=600.0)
    plan = Plan("draft", (task,), limits=Limits(max_concurrency=1, max_agents=1))
    settings = RunSettings(responses=Path("."), run_id="draft",
                           gateway=gateway or GatewaySettings())  # fmt: skip
    stopped: list[str] = []
    traffic = ModelTraffic(plan, settings, Ledger(), lambda *_: False, stopped.append)
    agent = ClaudeAgent(plan)
    rec = AgentRecord(DRAFTER, DRAFTER, "claude", "task", 1, 0, None, state="running")
    try:
        async with traffic.open(env, lambda kind: agent):
            access = traffic.grant(rec, task, meter)
            assert access is not None  # a credential is there, so the gateway is
            client = await agent.client(access)
            token = auth_headers(access)  # the client is shared: each request carries it

            sdk = importlib.import_module("anthropic")

            async def ask(messages: list[dict[str, Any]]) -> str:
                params: dict[str, Any] = {"model": model, "max_tokens": MAX_TOKENS,
                                          "system": system, "messages": messages}  # fmt: skip
                try:
                    async with asyncio.timeout(agent.settings.request_deadline):
                        reply = await client.messages.create(**params, extra_headers=token)
                except (sdk.APIError, TimeoutError) as exc:
                    why = stopped[0] if stopped else str(exc)
                    raise RunError(f"error: the model did not answer: {why}") from None
                return "".join(b.text for b in reply.content if b.type == "text")

            try:
                yield ask
            finally:
                await traffic.release(DRAFTER)
    finally:
        await agent.aclose()
