"""The real Claude Code CLI through the run's model gateway, offline, against the fake API.

The orchestrator holds a canary key; every claude-code child gets the gateway's URL and a
token of its own. These tests show that the preset's defaults let it work unattended, that a
refused tool call is never a silent success, that the key reaches no child in any form, that
the budget binds three children at once, and that a 401 stops the run's traffic once.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from claudecode import home_env, is_main_request, needs_real_claude, tool_results
from fakeapi import FakeMessagesAPI, Reply, authentication_error, text, tool_use
from fakes import marked_pids, wait_until_no_marked

from orchestrator.engine.scheduler import Run
from orchestrator.events import Blocked
from orchestrator.gateway.grants import TOKEN_PREFIX
from orchestrator.gateway.pricing import PriceTable, TokenCount
from orchestrator.plan.model import Task

pytestmark = [needs_real_claude, pytest.mark.timeout(120)]

CANARY = "sk-ant-canary-" + "5" * 28
MODEL = "claude-sonnet-4-5"


@pytest.fixture
def upstream(monkeypatch: pytest.MonkeyPatch) -> Callable[[FakeMessagesAPI], None]:
    def point(api: FakeMessagesAPI) -> None:
        monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
        monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)

    return point


def cc(tid: str, home: Path, prompt: str = "Do the task.", **kw: Any) -> Task:
    """A claude-code task with the preset's defaults (no permission_mode, no allowed_tools)."""
    return Task(tid, agent="claude-code", prompt=prompt, model=MODEL, env=home_env(home), **kw)


def files_under(*roots: Path) -> Iterator[Path]:
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                yield path


def canary_forms() -> list[bytes]:
    """The key as it is, reversed and base64-encoded (RELIABILITY.md, P8)."""
    key = CANARY.encode()
    return [key, key[::-1], base64.b64encode(key), base64.b64encode(key)[:-4]]


def environ_of(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read()
    except OSError:
        return b""


async def test_by_default_it_writes_and_runs_commands_and_its_shell_holds_a_token_not_the_key(
    make_run: Callable[..., Run],
    workspace: Path,
    responses: Path,
    tmp_path: Path,
    upstream: Callable[[FakeMessagesAPI], None],
) -> None:
    steps = [
        tool_use("Write", {"file_path": str(workspace / "hello.py"), "content": "print(1)\n"}),
        tool_use("Bash", {"command": "printenv ANTHROPIC_API_KEY > key.txt; env > env.txt; "
                          "python hello.py > out.txt; sleep 1", "description": "Check"}),
        text("Wrote hello.py and ran it."),
    ]  # fmt: skip

    def respond(body: dict[str, Any], index: int) -> Reply | None:
        if not is_main_request(body):
            return None
        return steps[tool_results(body)].with_usage(input_tokens=1000, output_tokens=20)

    home = tmp_path / "home"
    environs: dict[int, bytes] = {}
    async with FakeMessagesAPI(respond, api_key=CANARY) as api:
        upstream(api)
        run = make_run(cc("t", home), budget_usd=5.0)
        marker = run.settings.run_id
        async with asyncio.TaskGroup() as tg:
            running = tg.create_task(run.execute())
            while not running.done():  # every child's environment, while it lives
                for pid in marked_pids(marker):
                    environs.setdefault(pid, environ_of(pid))
                await asyncio.sleep(0.05)

    rec = run.agents["t"]
    md = (responses / "t.md").read_text()
    assert rec.state == "succeeded", md
    assert (workspace / "hello.py").read_text() == "print(1)\n"  # Write: no prompt needed
    assert (workspace / "out.txt").read_text() == "1\n"  # Bash: no prompt needed
    token = (workspace / "key.txt").read_text().strip()
    assert token.startswith(TOKEN_PREFIX)  # its shell holds the attempt's token ...
    assert "permission mode acceptEdits" in md
    # ... and the key is nowhere: not in any child's environment, not in any file.
    assert environs, "no child process was seen"
    assert any(token.encode() in env for env in environs.values())
    forms = canary_forms()
    for pid, env in environs.items():
        assert not [f for f in forms if f in env], pid
    for path in files_under(responses, workspace, home):
        data = path.read_bytes()
        assert not [f for f in forms if f in data], path
    # Upstream saw the key on every request, never the token; the gateway metered them.
    assert api.requests
    assert all(r.api_key == CANARY for r in api.requests)
    assert all(token not in str(dict(r.headers)) for r in api.requests)
    main = [r for r in api.requests if is_main_request(r.body)]
    assert len(main) == 3
    assert rec.cost_usd > 0
    assert md.count("usage: ") == len(api.requests)
    assert "claude-code's own estimate" in md
    assert await wait_until_no_marked(marker) == []


async def test_a_denied_tool_call_blocks_the_attempt_and_escalates_with_the_call_listed(
    make_run: Callable[..., Run],
    workspace: Path,
    responses: Path,
    tmp_path: Path,
    upstream: Callable[[FakeMessagesAPI], None],
) -> None:
    outside = tmp_path / "outside.txt"
    steps = [
        tool_use("Write", {"file_path": str(outside), "content": "x\n"}),
        text("I could not write it, but I am done."),
    ]

    def respond(body: dict[str, Any], index: int) -> Reply | None:
        return steps[tool_results(body)] if is_main_request(body) else None

    async with FakeMessagesAPI(respond, api_key=CANARY) as api:
        upstream(api)
        run = make_run(cc("t", tmp_path / "home"))
        await run.execute()

    assert not outside.exists()
    rec = run.agents["t"]
    assert rec.state == "blocked"  # not a silent success
    assert isinstance(rec.terminal, Blocked)
    assert rec.terminal.kind == "permission"
    assert (
        rec.reason == f"permission: claude-code was denied 1 tool call: Write({outside} (2 chars))"
    )
    assert run.tasks["t"].state == "escalated"
    assert not run.tasks["t"].fixers  # never sent to a fixer: it would be denied the same
    [escalation] = run.repairs.escalations
    assert f"Write({outside}" in str(escalation["reason"])
    assert "permission_mode or allowed_tools" in str(escalation["next_step"])
    md = (responses / "t.md").read_text()
    assert "escalated: never fixed: permission: claude-code was denied" in md


async def test_three_agents_under_a_small_budget_are_never_billed_past_it(
    make_run: Callable[..., Run],
    workspace: Path,
    tmp_path: Path,
    upstream: Callable[[FakeMessagesAPI], None],
) -> None:
    usage = {"input_tokens": 30_000, "output_tokens": 200}
    prices = PriceTable()
    billed: list[float] = []

    def respond(body: dict[str, Any], index: int) -> Reply:
        reply = (
            tool_use("Bash", {"command": "true", "description": "Keep going"})
            if is_main_request(body)
            else text("side")
        )
        billed.append(prices.cost(MODEL, TokenCount(input=30_000, output=200)))
        return reply.with_usage(**usage)

    budget = 2.0
    async with FakeMessagesAPI(respond, api_key=CANARY) as api:
        upstream(api)
        tasks = [cc(f"t{n}", tmp_path / f"home{n}") for n in range(3)]
        run = make_run(*tasks, budget_usd=budget, max_concurrency=3)
        await run.execute()
        biggest = max(len(json.dumps(r.body)) for r in api.requests)

    # The gateway reserved each request's worst case: its input (a Claude Code request is
    # tens of kilobytes, at 3 characters a token and the cache-write rate) plus 32,000
    # tokens of output. One such reservation is the most the bill could pass the budget by.
    one_request = prices.upper_bound(MODEL, input_tokens=biggest // 3 + 1, max_output=32_000)
    total = sum(billed)
    assert len(billed) >= 3
    assert total <= budget + one_request
    assert total <= budget  # in fact never past it: the worst case is reserved first
    assert run.governor.spent_usd == pytest.approx(total)  # what upstream billed, to the cent
    assert sum(a.cost_usd for a in run.agents.values()) == pytest.approx(total)
    assert {t.state for t in run.tasks.values()} == {"budget_exceeded"}
    print(f"\nbilled ${total:.4f} in {len(billed)} requests under ${budget:.2f}")


async def test_a_401_stops_every_agents_traffic_and_escalates_once(
    make_run: Callable[..., Run], tmp_path: Path, upstream: Callable[[FakeMessagesAPI], None]
) -> None:
    async with FakeMessagesAPI(lambda body, index: authentication_error(), api_key=CANARY) as api:
        upstream(api)
        tasks = [cc(f"t{n}", tmp_path / f"home{n}") for n in range(3)]
        run = make_run(*tasks, max_concurrency=1)
        await run.execute()

    assert len(api.requests) == 1  # the first 401 stopped the run's traffic
    assert {t.state for t in run.tasks.values()} == {"failed"}
    for n in (1, 2):
        assert "model traffic is stopped: API 401" in run.agents[f"t{n}"].reason
    [escalation] = run.repairs.escalations  # once, not once per agent
    assert escalation["task"] == "(model traffic)"
    assert "ANTHROPIC_API_KEY" in str(escalation["next_step"])
