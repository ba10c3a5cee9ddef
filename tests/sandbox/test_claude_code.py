"""The default claude-code agent works inside the sandbox, against the local fake API.

Through the run's gateway (its URL on the host's 127.0.0.1 is reachable: ``network: full``),
with its home and temp directories writable because the task's env names them; its Bash
tool is confined like the agent: it cannot see the orchestrator's environment nor write
beside the workspace.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from claudecode import home_env, is_main_request, needs_real_claude, tool_results
from fakeapi import FakeMessagesAPI, Reply, text, tool_use
from fakes import wait_until_no_marked

from orchestrator.engine.scheduler import Run
from orchestrator.gateway.grants import TOKEN_PREFIX
from orchestrator.plan.model import Plan, Task
from orchestrator.sandbox.decision import decide
from orchestrator.sandbox.support import probe

SUPPORT = probe()
pytestmark = [
    needs_real_claude,
    pytest.mark.skipif(not SUPPORT.can_sandbox, reason="cannot make a sandbox here"),
    pytest.mark.timeout(120),
]
CANARY = "sk-ant-canary-" + "7" * 28
BASH = (
    "printenv ANTHROPIC_API_KEY > key.txt; "
    "cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c sk-ant-canary > seen.txt; "
    "ls /proc | grep -c '^[0-9]' > procs.txt; "
    "echo owned > ../beside.txt; python hello.py > out.txt"
)


async def test_claude_code_writes_and_runs_commands_inside_the_sandbox(
    make_run: Callable[..., Run],
    workspace: Path,
    responses: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    steps = [
        tool_use("Write", {"file_path": str(workspace / "hello.py"), "content": "print(1)\n"}),
        tool_use("Bash", {"command": BASH, "description": "Check"}),
        text("Wrote hello.py and ran it."),
    ]

    def respond(body: dict[str, Any], index: int) -> Reply | None:
        if not is_main_request(body):
            return None
        return steps[tool_results(body)].with_usage(input_tokens=1000, output_tokens=20)

    home = tmp_path / "home"
    task = Task("t", agent="claude-code", prompt="Do it.", model="claude-sonnet-4-5",
                env=home_env(home))  # fmt: skip
    plan = Plan("p", (task,), workspace=workspace)
    decision = decide(plan, SUPPORT, responses=responses, scratch=tmp_path / "scratch")
    assert decision.confinement is not None
    async with FakeMessagesAPI(respond, api_key=CANARY) as api:
        monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
        run = make_run(task, budget_usd=5.0, sandbox=decision.confinement)
        await run.execute()

    md = (responses / "t.md").read_text()
    assert run.agents["t"].state == "succeeded", md
    assert "--unshare-pid" not in md, "the detail line names the program, not the sandbox"
    assert (workspace / "out.txt").read_text() == "1\n"
    assert (workspace / "key.txt").read_text().strip().startswith(TOKEN_PREFIX)
    assert (workspace / "seen.txt").read_text().strip() == "0", "no environ holds the key"
    assert int((workspace / "procs.txt").read_text()) < 20, "only the sandbox's processes"
    assert not (workspace.parent / "beside.txt").exists()
    assert len([r for r in api.requests if is_main_request(r.body)]) == 3
    assert await wait_until_no_marked(run.settings.run_id) == []
