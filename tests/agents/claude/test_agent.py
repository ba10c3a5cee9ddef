"""The claude agent end to end: real SDK, real scheduler, the local fake Messages API.

Every test points ``ANTHROPIC_BASE_URL`` at a `FakeMessagesAPI` in the test's own loop and
sets ``ANTHROPIC_API_KEY`` to a canary; nothing reaches the internet. The agent's requests go
through the run's model gateway, which holds the key, meters each request and absorbs
storms. What the agent did is read back from the server's request log, the run's state and
the files the run wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST_GATEWAY
from fakeapi import (
    JSON,
    FakeMessagesAPI,
    Reply,
    authentication_error,
    invalid_request,
    message,
    mid_stream_error,
    overloaded,
    rate_limited,
    spawn_fake_api,
    status_error,
    text,
    text_block,
    tool_use,
    tool_use_block,
)

from orchestrator.agents.base import Agent
from orchestrator.agents.claude.agent import ClaudeAgent, ClaudeSettings
from orchestrator.agents.claude.prompt import system_blocks
from orchestrator.agents.claude.sdk import classify
from orchestrator.agents.pool import AgentPool
from orchestrator.engine.scheduler import Run
from orchestrator.engine.state import RunSettings
from orchestrator.events import Failed
from orchestrator.gateway.limiter import ApiLimiter, RetryPolicy
from orchestrator.gateway.shared import GatewaySettings
from orchestrator.plan.model import FixerSpec, Limits, Plan, Price, Say, Task
from orchestrator.records.journal import Journal

CANARY = "sk-ant-canary-7f3a9c1e5b2d4f6081a3c5e7"
MODEL = "claude-sonnet-4-6"  # a current model: the SDK does not warn about it
FAST = ClaudeSettings(
    read_timeout=1.0,
    request_deadline=3.0,
    command_timeout=10.0,
    retry=RetryPolicy(max_attempts=8, base_delay=0.01, max_delay=0.05, retry_after_cap=1.0),
)


def gateway_limiter(run: Run) -> ApiLimiter:
    """The limiter of the run's model gateway (the one governor of every agent's requests)."""
    assert run.models.last is not None
    limiter = run.models.last.shared.limiter
    assert limiter is not None
    return limiter


def claude(tid: str, prompt: str = "Do the thing.", **kw: Any) -> Task:
    kw.setdefault("model", MODEL)
    return Task(tid, agent="claude", prompt=prompt, **kw)


@pytest.fixture
async def api(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeMessagesAPI]:
    async with FakeMessagesAPI() as server:
        monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
        yield server


async def execute(run: Run, *, within: float = 60.0) -> Run:
    """Run to the end, then close the run's agents (the client and its connections)."""
    try:
        async with asyncio.timeout(within):
            await run.execute()
    finally:
        agents = run._agent_for  # the pool or factory the run was given
        close = getattr(agents, "aclose", None)
        if close is not None:
            await close()
        if run.journal is not None:
            run.journal.close()
    return run


class Agents:
    """A run's agents: one `ClaudeAgent` with test settings, the pool for other kinds."""

    def __init__(self, plan: Plan, settings: ClaudeSettings = FAST) -> None:
        self.claude = ClaudeAgent(plan, settings=settings)
        self.pool = AgentPool(plan)

    def __call__(self, kind: str) -> Agent:
        return self.claude if kind == "claude" else self.pool(kind)

    async def aclose(self) -> None:
        await self.claude.aclose()
        await self.pool.aclose()


@pytest.fixture
def claude_run(workspace: Path, responses: Path) -> Callable[..., tuple[Run, ClaudeAgent]]:
    def build(
        *tasks: Task,
        settings: ClaudeSettings = FAST,
        gateway: GatewaySettings = FAST_GATEWAY,
        fixer: FixerSpec | None = None,
        prices: tuple[tuple[str, Price], ...] = (),
        journal: bool = False,
        **limits: Any,
    ) -> tuple[Run, ClaudeAgent]:
        limits.setdefault("max_concurrency", 16)
        limits.setdefault("spawn_rate", 1000.0)
        limits.setdefault("grace", 0.5)
        plan = Plan(
            "test", tuple(tasks), workspace=workspace, limits=Limits(**limits),
            fixer=fixer or FixerSpec(), prices=prices,
        )  # fmt: skip
        agents = Agents(plan, settings)
        settings_ = RunSettings(
            responses=responses, run_id=f"test-{uuid.uuid4().hex[:12]}", progress_interval=0.01,
            gateway=gateway,
        )  # fmt: skip
        log = Journal(responses / ".run" / "journal.jsonl", fresh=True) if journal else None
        return Run(plan, settings_, agents=agents, journal=log), agents.claude

    return build


def progress(responses: Path, agent_id: str) -> str:
    return (responses / f"{agent_id}.md").read_text()


def tool_results(request_body: JSON) -> list[JSON]:
    last = request_body["messages"][-1]
    return [b for b in last["content"] if b.get("type") == "tool_result"]


def failure_kind(run: Run, agent_id: str) -> str:
    terminal = run.agents[agent_id].terminal
    assert isinstance(terminal, Failed), terminal
    return terminal.kind


# --- the tool loop ----------------------------------------------------------------------------


async def test_an_agent_reads_edits_runs_and_finishes_and_its_progress_shows_each_step(
    api: FakeMessagesAPI, make_run: Callable[..., Run], workspace: Path, responses: Path
) -> None:
    (workspace / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    api.script(
        [
            tool_use("read_file", {"path": "calc.py"}, text="Let me look at the code first."),
            tool_use("edit_file", {"path": "calc.py", "old": "a - b", "new": "a + b"}),
            tool_use(
                "run_command",
                {"command": "python -c 'import calc; print(\"sum\", calc.add(2, 3))'"},
            ),
            tool_use("finish", {"summary": "Fixed add() to add."}),
        ]
    )
    run = await execute(make_run(claude("fix", "Fix add() in calc.py.")))

    assert run.tasks["fix"].state == "succeeded"
    assert run.agents["fix"].summary == "Fixed add() to add."
    assert (workspace / "calc.py").read_text() == "def add(a, b):\n    return a + b\n"
    md = progress(responses, "fix")
    steps = [
        "started: claude claude-sonnet-4-6",
        "Let me look at the code first.",
        "-> read_file: calc.py",
        "<- read_file: def add(a, b): (+1 lines)",
        "-> edit_file: calc.py (-5 +5 chars)",
        "<- edit_file: edited calc.py: replaced 1 occurrence",
        "-> run_command: python -c 'import calc; print(\"sum\", calc.add(2, 3))'",
        "| sum 5",
        "<- run_command: [exit code 0]",
        "finished: Fixed add() to add.",
        "status: succeeded",
    ]
    positions = [md.find(step) for step in steps]
    assert -1 not in positions, [s for s, p in zip(steps, positions, strict=True) if p < 0]
    assert positions == sorted(positions)
    assert md.count("usage: ") == 4  # one Usage per request

    # What went back to the model: each tool's result, answering its call.
    first, second, _, fourth = api.requests
    [result] = tool_results(second.body)
    assert result["content"] == "def add(a, b):\n    return a - b\n"
    assert result["tool_use_id"] == f"toolu_fake{first.index:04d}01"  # the fake's numbering
    assert "sum 5" in tool_results(fourth.body)[0]["content"]
    assert run.agents["fix"].tokens_in > 0
    assert run.agents["fix"].cost_usd > 0


async def test_the_request_caches_its_stable_prefix_and_carries_the_context(
    api: FakeMessagesAPI, claude_run: Callable[..., tuple[Run, ClaudeAgent]], workspace: Path
) -> None:
    api.script(
        [
            tool_use("finish", {"summary": "The schema is in db/schema.sql."}),
            tool_use("list_files", {}),
            text("All done."),
        ]
    )
    run, _ = claude_run(claude("schema"), claude("api", "Build the API.", depends_on=("schema",)))
    await execute(run)

    assert run.tasks["api"].state == "succeeded"
    body = api.requests[1].body
    assert body["model"] == MODEL
    assert body["max_tokens"] == FAST.max_tokens
    assert body["stream"] is True
    instructions, task_block = body["system"]
    assert instructions["cache_control"] == {"type": "ephemeral"}
    assert task_block["cache_control"] == {"type": "ephemeral"}
    assert "report_blocker" in instructions["text"]
    assert "Build the API." in task_block["text"]
    assert str(workspace) in task_block["text"]
    assert "schema: The schema is in db/schema.sql. (progress: schema.md)" in task_block["text"]
    assert [t["name"] for t in body["tools"]][-2:] == ["report_blocker", "finish"]
    assert body["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    assert all("cache_control" not in t for t in body["tools"][:-1])
    # The conversation's last block is a breakpoint too, and only the last.
    third = api.requests[2].body["messages"]
    assert third[-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert all("cache_control" not in b for m in third[:-1] for b in m["content"])
    assert run.agents["api"].summary == "All done."


async def test_a_turn_that_ends_without_finish_counts_as_finished_with_its_text(
    api: FakeMessagesAPI, claude_run: Callable[..., tuple[Run, ClaudeAgent]], responses: Path
) -> None:
    api.script([tool_use("list_files", {}), text("Nothing to change: the code is right.")])
    run, _ = claude_run(claude("t"))
    await execute(run)
    assert run.tasks["t"].state == "succeeded"
    assert run.agents["t"].summary == "Nothing to change: the code is right."


async def test_a_blocker_ends_the_attempt_blocked_and_a_fixer_is_spawned(
    api: FakeMessagesAPI, claude_run: Callable[..., tuple[Run, ClaudeAgent]], responses: Path
) -> None:
    api.script(
        [
            tool_use("report_blocker", {"reason": "Need the schema for the users table"}),
            tool_use("finish", {"summary": "Done now that the schema exists."}),
        ]
    )
    fixer = FixerSpec(agent="scripted", script=(Say("Writing the schema"),))
    run, _ = claude_run(claude("t"), fixer=fixer)
    await execute(run)

    assert run.agents["t"].state == "blocked"
    assert run.agents["t"].reason == "Need the schema for the users table"
    assert run.tasks["t"].fixers == ["t+fix1"]
    assert run.tasks["t"].attempts == ["t", "t+2"]
    assert run.tasks["t"].state == "succeeded"
    assert "BLOCKED: Need the schema for the users table" in progress(responses, "t")
    retry_system = api.requests[1].body["system"][1]["text"]
    assert "attempt 2" in retry_system


async def test_max_turns_fails_with_kind_max_turns(
    api: FakeMessagesAPI, claude_run: Callable[..., tuple[Run, ClaudeAgent]], responses: Path
) -> None:
    api.script(lambda body, index: tool_use("list_files", {}))
    run, _ = claude_run(claude("t", max_turns=3))
    await execute(run)

    assert run.tasks["t"].state == "failed"
    assert failure_kind(run, "t") == "max_turns"
    assert run.agents["t"].reason == "max turns (3) reached"
    assert len(api.requests) == 3


async def test_a_reply_cut_at_max_tokens_runs_none_of_its_tools(
    api: FakeMessagesAPI, claude_run: Callable[..., tuple[Run, ClaudeAgent]], workspace: Path
) -> None:
    cut = message(
        text_block("Writing it."),
        tool_use_block("write_file", {"path": "big.py", "content": "x = 1\n"}),
        stop_reason="max_tokens",
    )
    api.script([cut, text("Giving up on the big file.")])
    run, _ = claude_run(claude("t"))
    await execute(run)

    assert not (workspace / "big.py").exists()
    second = api.requests[1].body["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert second[1]["content"] == [{"type": "text", "text": "Writing it."}]
    assert "cut off" in second[2]["content"][0]["text"]


async def test_usage_counts_cache_tokens_at_their_prices(
    api: FakeMessagesAPI, claude_run: Callable[..., tuple[Run, ClaudeAgent]], responses: Path
) -> None:
    api.script(
        [
            text("Done.").with_usage(
                input_tokens=1000,
                cache_creation_input_tokens=2000,
                cache_read_input_tokens=30000,
                output_tokens=500,
            )
        ]
    )
    run, _ = claude_run(claude("t"))
    await execute(run)

    rec = run.agents["t"]
    assert (rec.tokens_in, rec.tokens_out) == (33000, 500)
    expected = (1000 * 3.0 + 2000 * 3.75 + 30000 * 0.30 + 500 * 15.0) / 1e6
    assert rec.cost_usd == pytest.approx(expected)
    assert run.governor.spent_usd == pytest.approx(expected)
    assert run.governor.reserved_usd == 0.0
    assert "usage: 33000 in / 500 out tokens" in progress(responses, "t")


async def test_a_deprecated_model_is_noted_in_the_progress_file_not_warned(
    api: FakeMessagesAPI, claude_run: Callable[..., tuple[Run, ClaudeAgent]], responses: Path
) -> None:
    # Which models are deprecated is the installed SDK's word (it changes between releases),
    # so the test takes one from the SDK's own list, and checks the current model is quiet.
    deprecated = sorted(sdk_deprecated_models())
    assert deprecated, "this anthropic release deprecates no model: nothing to note"
    assert MODEL not in deprecated
    old = deprecated[0]
    run, _ = claude_run(claude("t", model=old), claude("u", model=MODEL))
    await execute(run)  # filterwarnings=error: a warning escaping would fail the agent
    assert run.tasks["t"].state == run.tasks["u"].state == "succeeded"
    assert f"[note: The model '{old}' is deprecated" in progress(responses, "t")
    assert "[note:" not in progress(responses, "u")


def sdk_deprecated_models() -> set[str]:
    """The models the installed SDK warns about when a request names them."""
    messages = importlib.import_module("anthropic.resources.messages.messages")
    return set(messages.DEPRECATED_MODELS)


# --- confinement and the key ------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory next to the workspace, and a HOME whose .bashrc holds the key."""
    out = tmp_path / "outside"
    out.mkdir()
    (out / "secret.txt").write_text("outside secret\n")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text(f"export ANTHROPIC_API_KEY={CANARY}\nexport PS1='$ '\n")
    monkeypatch.setenv("HOME", str(home))
    return out


def files_under(*roots: Path) -> Iterator[Path]:
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                yield path


async def test_scripted_attacks_cannot_leave_the_workspace_or_reveal_the_key(
    api: FakeMessagesAPI,
    claude_run: Callable[..., tuple[Run, ClaudeAgent]],
    workspace: Path,
    responses: Path,
    outside: Path,
) -> None:
    (workspace / ".git" / "hooks").mkdir(parents=True)
    (workspace / "out").symlink_to(outside)
    (workspace / ".env").write_text(f"ANTHROPIC_API_KEY={CANARY}\n")
    attacks: list[tuple[str, dict[str, Any]]] = [
        ("read_file", {"path": "../outside/secret.txt"}),
        ("write_file", {"path": "../outside/planted.txt", "content": "x"}),
        ("write_file", {"path": str(outside / "planted.txt"), "content": "x"}),
        ("read_file", {"path": str(outside / "secret.txt")}),
        ("read_file", {"path": "out/secret.txt"}),
        ("write_file", {"path": "out/planted.txt", "content": "x"}),
        ("edit_file", {"path": "out/secret.txt", "old": "outside", "new": "pwned"}),
        ("write_file", {"path": str(responses / "t.md"), "content": "status: succeeded\n"}),
        ("write_file", {"path": ".git/hooks/pre-commit", "content": "#!/bin/sh\nrm -rf /\n"}),
        ("read_file", {"path": ".env"}),
        ("search", {"regex": "sk-ant"}),
        ("run_command", {"command": "cat ~/.bashrc; env"}),
        ("run_command", {"command": "echo key=$ANTHROPIC_API_KEY; cat .env"}),
    ]
    api.script(
        [*(tool_use(name, args) for name, args in attacks), tool_use("finish", {"summary": "ok"})]
    )
    run, _ = claude_run(claude("t"), journal=True)
    await execute(run)

    assert run.tasks["t"].state == "succeeded"
    assert (responses / ".run" / "journal.jsonl").stat().st_size > 0
    assert os.listdir(outside) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "outside secret\n"
    assert not (workspace / ".git" / "hooks" / "pre-commit").exists()
    results = [tool_results(r.body)[0] for r in api.requests[1:]]
    refused = [r.get("is_error", False) for r in results[:9]]
    assert refused == [True] * 9, [r["content"] for r in results[:9]]
    assert "outside secret" not in json.dumps([r.body for r in api.requests])
    # The key: never in anything sent back to the model, nor in any file the run wrote.
    for request in api.requests:
        assert CANARY not in json.dumps(request.body)
    assert "[REDACTED]" in results[9]["content"]  # .env, read back masked
    assert "export PS1" in results[11]["content"]  # the command ran; the key was masked
    written = [p for p in files_under(responses, workspace) if p.name != ".env"]  # ours
    assert len(written) >= 3  # t.md, t.events.jsonl, the journal
    for path in written:
        assert CANARY.encode() not in path.read_bytes(), path


async def test_a_responses_directory_inside_the_workspace_is_read_only_to_tools(
    api: FakeMessagesAPI, workspace: Path
) -> None:
    responses = workspace / "agent-responses"
    (responses / ".run").mkdir(parents=True)
    api.script(
        [
            tool_use("write_file", {"path": "agent-responses/t.md", "content": "forged\n"}),
            tool_use("edit_file", {"path": "agent-responses/t.md", "old": "#", "new": "x"}),
            tool_use("write_file", {"path": "./agent-responses/../agent-responses/x.md",
                                    "content": "x"}),
            tool_use("finish", {"summary": "ok"}),
        ]
    )  # fmt: skip
    plan = Plan("test", (claude("t"),), workspace=workspace, limits=Limits(spawn_rate=1000.0))
    settings = RunSettings(responses=responses, run_id="test-inside", progress_interval=0.01)
    run = await execute(Run(plan, settings, agents=Agents(plan)))

    results = [tool_results(r.body)[0] for r in api.requests[1:]]
    assert [r.get("is_error") for r in results] == [True, True, True]
    assert all("protected" in r["content"] for r in results)
    assert sorted(os.listdir(responses)) == [".run", "t.events.jsonl", "t.md"]
    assert "forged" not in (responses / "t.md").read_text()
    assert run.tasks["t"].state == "succeeded"


# --- storms -----------------------------------------------------------------------------------


def three_turns(body: JSON) -> Reply:
    turn = len(body["messages"]) // 2
    return tool_use("list_files", {}) if turn < 2 else tool_use("finish", {"summary": "done"})


async def test_a_storm_of_429_529_and_mid_stream_errors_slows_the_run_but_fails_nobody(
    api: FakeMessagesAPI, claude_run: Callable[..., tuple[Run, ClaudeAgent]]
) -> None:
    storm = [overloaded(), mid_stream_error(), rate_limited(0.05), overloaded(), api_error_500()]
    errors = 30

    def respond(body: JSON, index: int) -> Reply:
        return storm[index % len(storm)] if index < errors else three_turns(body)

    api.script(respond)
    gateway = replace(FAST_GATEWAY, ceiling=16)
    tasks = (claude(f"a{n}") for n in range(16))
    run, agent = claude_run(*tasks, gateway=gateway, max_concurrency=16)
    await execute(run)

    assert {t.state for t in run.tasks.values()} == {"succeeded"}
    limiter = gateway_limiter(run)  # one governor for every agent: the gateway's
    assert limiter.ceiling == 16
    # visibly lowered (how far depends on how the 429s interleave on a loaded machine) ...
    assert limiter.lowest <= limiter.ceiling // 2
    assert limiter.capacity == 16  # ... and restored by the successes after the storm
    assert limiter.aimd.decreases >= 3
    assert len(api.requests) == errors + 16 * 3
    # The gateway retried what failed before the answer began; an error mid-stream (the
    # answer had begun) reached the agent, which sent its turn again.
    mid_stream = sum(1 for n in range(errors) if n % len(storm) == 1)
    assert agent.requests_sent == 16 * 3 + mid_stream
    print(
        f"\nstorm: {errors} errors in {len(api.requests)} requests; concurrency "
        f"{limiter.ceiling} -> {limiter.lowest} -> {limiter.capacity} "
        f"({limiter.aimd.decreases} decreases)"
    )


@pytest.mark.parametrize(
    ("storm", "gateway"),
    [
        pytest.param(6.0, FAST_GATEWAY, id="6s-storm-fast-retries"),
        pytest.param(
            150.0, GatewaySettings(), id="150s-storm-real-retries",
            marks=[pytest.mark.slow, pytest.mark.timeout(400)],
        ),
    ],
)  # fmt: skip
async def test_20_agents_ride_out_a_storm_longer_than_any_count_of_tries(
    api: FakeMessagesAPI,
    claude_run: Callable[..., tuple[Run, ClaudeAgent]],
    responses: Path,
    storm: float,
    gateway: GatewaySettings,
) -> None:
    # Every request fails (429 with a short retry-after, 529 without) until the storm is
    # over: ``storm`` seconds, and at least ten failures per agent on average (so that, however
    # slowly a loaded machine retries, some agent is refused more than the 8 tries a turn used
    # to get). The gateway keeps trying for as long as each agent's own deadline allows, so
    # every agent just answers late.
    started: list[float] = []

    def respond(body: JSON, index: int) -> Reply:
        now = asyncio.get_running_loop().time()
        started.append(started[0] if started else now)
        if now - started[0] < storm or index < 20 * 10:
            return rate_limited(0.05) if index % 2 else overloaded()
        return tool_use("finish", {"summary": "done after the storm"})

    api.script(respond)
    tasks = (claude(f"a{n:02d}", timeout=storm + 60) for n in range(20))
    settings = replace(FAST, request_deadline=storm + 30)  # the agent waits it out too
    run, agent = claude_run(*tasks, settings=settings, gateway=gateway, max_concurrency=20)
    await execute(run, within=storm + 120)

    assert {t.state for t in run.tasks.values()} == {"succeeded"}
    assert agent.requests_sent == 20  # no agent saw a failure: only a slow answer
    failed = len(api.requests) - 20
    last = max(r.received for r in api.requests) - api.requests[0].received
    assert last >= storm
    retries = [progress(responses, f"a{n:02d}").count("[gateway: API ") for n in range(20)]
    assert sum(retries) == failed
    assert max(retries) > 8  # more tries than a turn used to get
    print(f"\nstorm of {storm:g}s: {failed} failed requests; retries per agent {sorted(retries)}")


def api_error_500() -> Reply:
    return status_error(500, "api_error", "Internal server error")


async def test_429_retry_after_is_honoured(
    api: FakeMessagesAPI, claude_run: Callable[..., tuple[Run, ClaudeAgent]]
) -> None:
    api.script([rate_limited(retry_after=0.4), text("Done.")])
    run, _ = claude_run(claude("t"))
    await execute(run)
    first, second = api.requests
    assert run.tasks["t"].state == "succeeded"
    assert second.received - first.received >= 0.39


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (text("never finished").with_stall(after_events=3), "the upstream stream broke off"),
        (text("cut short").with_drop(after_events=3), "the upstream stream broke off"),
        (text("too slow").with_trickle(1.0), "passed its deadline"),  # 5 gaps: 5 s > 4 s
        (text("late").with_delay(5.0), "[gateway: upstream unreachable: "),
    ],
)
async def test_stalls_drops_and_deadlines_mid_stream_are_retried(
    api: FakeMessagesAPI,
    claude_run: Callable[..., tuple[Run, ClaudeAgent]],
    responses: Path,
    reply: Reply,
    why: str,
) -> None:
    # Upstream silence is the gateway's to notice (2 s here): before the answer began it
    # retries; after, it ends the stream with an error event and the agent sends its turn
    # again. The agent's own wall clock per request (4 s) catches a trickle. (Seconds, not
    # tenths: a loaded machine's lag must not read as silence, nor the retry miss its deadline.)
    api.script([reply, text("Done.")])
    settings = ClaudeSettings(
        read_timeout=2.0, request_deadline=4.0, retry=RetryPolicy(base_delay=0.01, max_delay=0.02)
    )
    gateway = replace(FAST_GATEWAY, read_timeout=2.0)
    run, _ = claude_run(claude("t"), settings=settings, gateway=gateway)
    await execute(run)

    assert run.tasks["t"].state == "succeeded"
    assert len(api.requests) == 2
    assert api.requests[0].body["messages"] == api.requests[1].body["messages"]
    assert why in progress(responses, "t")


async def test_a_tool_call_cut_by_a_mid_stream_error_is_not_run_and_the_turn_is_resent(
    api: FakeMessagesAPI, claude_run: Callable[..., tuple[Run, ClaudeAgent]], workspace: Path
) -> None:
    half = tool_use("write_file", {"path": "half.py", "content": "print('hello world')\n" * 4})
    half = Reply(**{**half.__dict__, "error_after": 6, "error_type": "overloaded_error"})
    api.script([half, tool_use("finish", {"summary": "ok"})])
    run, _ = claude_run(claude("t"))
    await execute(run)

    assert not (workspace / "half.py").exists()
    first, second = api.requests
    assert first.body["messages"] == second.body["messages"]
    assert run.tasks["t"].state == "succeeded"


async def test_a_401_fails_fast_without_retries_for_the_whole_run_and_escalates_once(
    api: FakeMessagesAPI, make_run: Callable[..., Run], responses: Path
) -> None:
    api.script(lambda body, index: authentication_error())
    run = await execute(make_run(claude("a"), claude("b"), claude("c"), max_concurrency=1))

    assert len(api.requests) == 1  # no retry, and nobody else tried with the same key
    for tid in ("a", "b", "c"):
        assert run.tasks[tid].state == "failed"
        assert failure_kind(run, tid) == "provider"
    reason = run.agents["a"].reason
    assert "401 authentication_error" in reason
    assert "ANTHROPIC_API_KEY" in reason
    assert "\n" not in reason
    assert CANARY not in reason
    [escalation] = run.repairs.escalations  # once for the run, not once per agent
    assert escalation["task"] == "(model traffic)"
    assert "401 authentication_error" in str(escalation["blocker"])


@pytest.mark.parametrize(
    "reply",
    [
        invalid_request("max_tokens: must be at most 64000"),
        status_error(403, "permission_error", "no access to this model"),
        status_error(404, "not_found_error", "model: claude-nope"),
        status_error(402, "billing_error", "Your credit balance is too low"),
    ],
)
async def test_client_errors_fail_fast_without_retries(
    api: FakeMessagesAPI, claude_run: Callable[..., tuple[Run, ClaudeAgent]], reply: Reply
) -> None:
    api.script([reply])
    run, _ = claude_run(claude("t"))
    await execute(run)
    assert len(api.requests) == 1
    assert failure_kind(run, "t") == "provider"


async def test_an_attempt_stopped_mid_request_releases_its_slot_and_reservation(
    api: FakeMessagesAPI, claude_run: Callable[..., tuple[Run, ClaudeAgent]], responses: Path
) -> None:
    api.script([text("never finished").with_stall(after_events=2)])
    settings = ClaudeSettings(read_timeout=30.0, request_deadline=60.0, retry=FAST.retry)
    # The stream stalls for good, so the attempt always ends by its timeout; 4 s (not less) lets
    # the request reach the server and announce its input even on a heavily loaded machine.
    run, agent = claude_run(claude("t", timeout=4.0), settings=settings, budget_usd=5.0)
    # The first import of the SDK may take longer than the timeout.
    await asyncio.to_thread(importlib.import_module, "anthropic")
    await execute(run)

    assert run.tasks["t"].state == "timed_out"
    assert len(api.requests) == 1
    assert agent.limiter.in_flight == 0
    assert gateway_limiter(run).in_flight == 0
    assert run.governor.reserved_usd == 0.0
    assert run.agents["t"].tokens_in > 0  # the input the stream announced is counted
    assert progress(responses, "t").rstrip().splitlines()[-1].startswith("status: timed_out")


# --- budget -----------------------------------------------------------------------------------


async def test_a_budget_that_covers_n_requests_never_sends_request_n_plus_1(
    api: FakeMessagesAPI, claude_run: Callable[..., tuple[Run, ClaudeAgent]], responses: Path
) -> None:
    # Output priced $10/Mtok, input free: each request's upper bound (1000 output tokens) is
    # exactly $0.01, and each reply really uses its 1000 output tokens.
    settings = ClaudeSettings(max_tokens=1000, retry=FAST.retry)
    prices = (("test-model", Price(0.0, 10.0)),)
    api.script(lambda body, index: tool_use("list_files", {}).with_usage(output_tokens=1000))
    run, _ = claude_run(
        *(claude(f"a{n}", model="test-model") for n in range(4)),
        settings=settings, prices=prices, budget_usd=0.035,
    )  # fmt: skip
    await execute(run)

    assert len(api.requests) == 3
    assert {t.state for t in run.tasks.values()} == {"budget_exceeded"}
    assert run.governor.spent_usd == pytest.approx(0.03)
    assert run.governor.reserved_usd == 0.0
    refused = [a for a in run.agents.values() if "not sent" in a.reason]
    assert refused
    assert "budget: the request may cost up to $0.0100" in refused[0].reason


async def test_a_tasks_own_budget_stops_that_task_only(
    api: FakeMessagesAPI, claude_run: Callable[..., tuple[Run, ClaudeAgent]]
) -> None:
    settings = ClaudeSettings(max_tokens=1000, retry=FAST.retry)
    prices = (("test-model", Price(0.0, 10.0)),)
    api.script(
        lambda body, index: (
            tool_use("list_files", {}) if len(body["messages"]) < 6 else text("Done.")
        ).with_usage(output_tokens=1000)
    )
    run, _ = claude_run(
        claude("capped", model="test-model", budget_usd=0.015),
        claude("free", model="test-model"),
        settings=settings, prices=prices, budget_usd=1.0,
    )  # fmt: skip
    await execute(run)
    assert run.tasks["capped"].state == "budget_exceeded"
    assert "of the task's $0.01 is left" in run.agents["capped"].reason
    assert run.agents["capped"].cost_usd == pytest.approx(0.01)
    assert run.tasks["free"].state == "succeeded"


async def test_the_scheduler_fence_stops_agents_once_the_budget_is_spent(
    api: FakeMessagesAPI, claude_run: Callable[..., tuple[Run, ClaudeAgent]]
) -> None:
    settings = ClaudeSettings(max_tokens=1000, retry=FAST.retry)
    prices = (("test-model", Price(0.0, 10.0)),)
    api.script(lambda body, index: tool_use("list_files", {}).with_usage(output_tokens=1000))
    run, _ = claude_run(
        claude("a", model="test-model"), settings=settings, prices=prices, budget_usd=0.02
    )
    await execute(run)
    assert len(api.requests) == 2
    assert run.tasks["a"].state == "budget_exceeded"


# --- scale and the event loop -----------------------------------------------------------------


def _runqueue_wait() -> float:
    """Seconds this thread has waited for a CPU (Linux schedstat; 0 where it is missing)."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


@contextlib.asynccontextmanager
async def loop_lag() -> AsyncIterator[list[float]]:
    """The worst delay of a 10 ms ticker while the block runs: ``[worst, worst_wall]``.

    ``worst`` leaves out the time the thread waited for a CPU that other processes held (a
    busy CI machine is not the loop being blocked); blocking system calls still count.
    """
    worst = [0.0, 0.0]
    loop = asyncio.get_running_loop()

    async def tick() -> None:
        while True:
            start, queued = loop.time(), _runqueue_wait()
            await asyncio.sleep(0.01)
            lag = loop.time() - start - 0.01
            worst[0] = max(worst[0], lag - (_runqueue_wait() - queued))
            worst[1] = max(worst[1], lag)

    async with asyncio.TaskGroup() as tg:
        ticker = tg.create_task(tick())
        try:
            yield worst
        finally:
            ticker.cancel()


@pytest.mark.slow
@pytest.mark.timeout(300)  # the server's cap (90 s) is the worst a broken run waits
async def test_200_agents_have_their_requests_in_flight_together(
    make_run: Callable[..., Run], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server is a process of its own, so that the lag measured is the orchestrator's
    # alone. It answers no request before all 200 have arrived (or CAP s after one came):
    # had any agent's request waited for another's answer, the first answers would have
    # waited out the cap. No guess about how fast a loaded machine starts 200 agents.
    cap = 90.0
    script = {"default": {"text": "All done here.", "trickle": 0.01, "chunk": 4}}
    with spawn_fake_api(tmp_path, script, latency=cap, gather=200) as server:
        monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        tasks = [claude(f"a{n:03d}") for n in range(200)]
        run = make_run(*tasks, max_concurrency=250, max_agents=300, spawn_rate=10_000.0)
        async with loop_lag() as worst:
            await execute(run)
        arrivals = sorted(r["received"] for r in server.requests())

    assert {t.state for t in run.tasks.values()} == {"succeeded"}
    assert len(arrivals) == 200
    spread = arrivals[-1] - arrivals[0]
    assert spread < cap, f"the 200 requests arrived over {spread:.1f}s: some waited for others"
    assert worst[0] < 1.0, f"the event loop was blocked for {worst[0]:.2f}s"
    print(
        f"\nall 200 in flight together, arrived within {spread:.2f}s; worst loop lag "
        f"{worst[0] * 1000:.0f} ms "
        f"({worst[1] * 1000:.0f} ms wall clock, waits for a CPU included)"
    )


# --- the SDK stays lazy, classification ---------------------------------------------------------


def test_importing_the_claude_agent_does_not_import_the_sdk() -> None:
    code = (
        "import sys, orchestrator.agents.claude.agent, orchestrator.gateway.limiter\n"
        "import orchestrator.gateway.pricing\n"
        "print('anthropic' in sys.modules, 'httpx2' in sys.modules)"
    )
    out = subprocess.check_output([sys.executable, "-c", code], text=True, env=dict(os.environ))
    assert out.split() == ["False", "False"]


def test_bugs_are_not_classified_as_api_failures() -> None:
    assert classify(KeyError("x")) is None
    assert classify(ValueError("x")) is None
    timeout = classify(TimeoutError())
    assert timeout is not None
    assert timeout.kind == "transient"


def test_the_system_prompt_says_how_to_finish_and_report_a_blocker(workspace: Path) -> None:
    from orchestrator.agents.base import AgentContext

    ctx = AgentContext(
        agent_id="t", task=claude("t", "Add a login page.", max_turns=7), attempt=1,
        prompt="Add a login page.", script=(), workspace=workspace, responses=workspace.parent,
        env={}, emit=lambda event: None, context_notes=("models: added User (progress: m.md)",),
    )  # fmt: skip
    instructions, task_text = (b["text"] for b in system_blocks(ctx))
    assert "`finish`" in instructions
    assert "`report_blocker`" in instructions
    assert "Add a login page." in task_text
    assert str(workspace) in task_text
    assert "- models: added User (progress: m.md)" in task_text
    assert "at most 7 replies" in task_text


def test_the_example_plan_validates_with_claude_agents_and_prices() -> None:
    from orchestrator.plan.load import load_plan

    plan = load_plan(Path(__file__).resolve().parents[3] / "plans" / "claude-example.yaml")
    assert {t.agent for t in plan.tasks} == {"claude"}
    assert plan.fixer.agent == "claude"
    assert plan.limits.budget_usd == 2
    assert dict(plan.prices)["claude-sonnet-4-6"] == Price(3, 15)
    assert plan.task("readme").model == "claude-haiku-4-5"


# --- tasks added at run time ------------------------------------------------------------------


async def test_a_claude_agent_adds_a_task_with_its_tool_and_reads_the_refusal_past_max_agents(
    api: FakeMessagesAPI, make_run: Callable[..., Run], responses: Path
) -> None:
    def answer(body: JSON, _: int) -> Reply:
        if "Follow up." in json.dumps(body["system"]):
            return tool_use("finish", {"summary": "followed up"})
        turn = len(body["messages"])
        if turn == 1:
            return tool_use("add_task", {"id": "follow", "prompt": "Follow up.",
                                         "depends_on": ["lead"]})  # fmt: skip
        if turn == 3:
            return tool_use("add_task", {"id": "more", "prompt": "And more."})
        return tool_use("finish", {"summary": "done"})

    api.script(answer)
    run = await execute(make_run(claude("lead", "Lead the work."), max_agents=2))

    assert run.tasks["lead"].state == "succeeded"
    assert run.tasks["follow"].state == "succeeded"  # started once lead had succeeded
    follow = run.agents["follow"]
    assert (follow.parent, follow.depth) == ("lead", 1)
    assert "more" not in run.tasks
    added, refused = (
        tool_results(r.body)[0]
        for r in api.requests
        if len(r.body["messages"]) in (3, 5) and "Lead the work." in json.dumps(r.body["system"])
    )
    assert json.loads(added["content"]) == {"ok": True, "added": "follow", "depth": 1,
                                            "parent": "lead"}  # fmt: skip
    assert refused["is_error"] is True
    assert json.loads(refused["content"])["refused"]["rule"] == "max_agents"
    md = progress(responses, "lead")
    assert "added task: follow (follow.md)" in md
    assert "add refused: " in md
    assert "[max_agents]" in md
    assert "- parent: lead.md" in progress(responses, "follow")
    assert len(api.requests) == 4  # lead: 3 turns; follow: 1
