"""The run's claude agents share a few HTTP clients: one per `agents_per_client` at once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fakeapi import FakeMessagesAPI

from orchestrator.agents.claude.agent import ClaudeAgent, clients_for
from orchestrator.engine.scheduler import Run
from orchestrator.plan.model import Task

CANARY = "sk-ant-canary-clients-5e1f0a9b"


@pytest.mark.parametrize(
    ("concurrency", "per_client", "clients"),
    [(1, 16, 1), (16, 16, 1), (17, 16, 2), (500, 16, 32), (0, 16, 1), (8, 0, 8)],
)
def test_a_run_gets_one_client_per_agents_per_client_at_once(
    concurrency: int, per_client: int, clients: int
) -> None:
    assert clients_for(concurrency, per_client) == clients


async def test_agents_spread_over_the_runs_clients_all_finish(
    make_run: Callable[..., Run], workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with FakeMessagesAPI() as api:
        monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
        monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
        tasks = [
            Task(f"a{n}", agent="claude", prompt="Answer OK.", model="claude-sonnet-4-6")
            for n in range(20)
        ]
        run = make_run(*tasks, max_concurrency=20)
        await run.execute()
        claude = run._agent_for("claude")
        assert isinstance(claude, ClaudeAgent)
        assert claude.clients_made == 2  # 20 at once, 16 a client
        assert {t.state for t in run.tasks.values()} == {"succeeded"}
        assert len(api.requests) == 20
