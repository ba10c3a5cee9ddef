"""One reader of ``BLOCKED:`` lines for every kind: the same line blocks a command, codex, aider
and claude-code agent alike, plain or dressed in Markdown. Real agents run real programs."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import pytest
from fakes import FAKES, Recorder, wait_until_no_marked

from orchestrator.agents.base import Agent, AgentContext
from orchestrator.agents.command import CommandAgent
from orchestrator.agents.output import blocked_reason, outcome
from orchestrator.agents.presets.agent import PresetAgent
from orchestrator.agents.presets.table import BUILTIN
from orchestrator.events import Blocked, Failed, Finished
from orchestrator.plan.model import Plan, Task
from orchestrator.process.env import child_env

pytestmark = pytest.mark.timeout(60)

LINES = [
    ("BLOCKED: need the schema", "need the schema"),
    ("**BLOCKED:** need the schema", "need the schema"),
    ("  > BLOCKED: need the schema", "need the schema"),
    ("`BLOCKED`: need the schema", "need the schema"),
    ("BLOCKED:", "(no reason given)"),
    ("**BLOCKED:** __need__ the schema **", "__need__ the schema"),
    ("BLOCKED: need the schema\r", "need the schema"),
]
NOT_BLOCKED = ["NOT BLOCKED: fine", "the word BLOCKED appears: no", "blocked: lowercase"]


@pytest.mark.parametrize(("line", "reason"), LINES)
def test_a_blocked_line_gives_its_reason(line: str, reason: str) -> None:
    assert blocked_reason(line) == reason
    assert blocked_reason(f"some text\n{line}\nmore") == reason


@pytest.mark.timeout(10)
def test_a_huge_hostile_line_is_read_in_linear_time() -> None:
    """``BLOCKED: `` and 64 KiB of ``*`` then ``x``: a lazy group before a class at the end
    of the line made this quadratic (~20 s on the event loop); it is now one pass."""
    line = "BLOCKED: " + "*" * (64 * 1024) + "x"
    for _ in range(20):
        assert blocked_reason(line) == "*" * 499 + "…"


@pytest.mark.parametrize("line", NOT_BLOCKED)
def test_other_lines_are_not_blockers(line: str) -> None:
    assert blocked_reason(line) is None


@pytest.mark.parametrize(
    ("code", "event"),
    [
        (0, Finished("last")),
        (1, Failed("exit code 1")),
        (126, Failed("exit code 126: the command is not executable", kind="config")),
        (127, Failed("exit code 127: the command was not found", kind="config")),
        (-9, Failed("killed by signal 9 (SIGKILL)")),
    ],
)
def test_exit_codes_mean_the_same_for_every_kind(code: int, event: object) -> None:
    assert outcome(code, "last") == event


def _agent(kind: str, line: str, tmp: Path) -> tuple[Agent, Task]:
    """An agent of ``kind`` whose program prints ``line``."""
    if kind == "command":
        task = Task("t", agent="command", command=(sys.executable, "-c", f"print({line!r})"))
        return CommandAgent(), task
    if kind == "claude-code":
        stream = tmp / "stream.jsonl"
        recorded = (FAKES / "streams" / "blocked.jsonl").read_text()
        said = json.dumps(line)[1:-1]  # as it appears inside a JSON string
        stream.write_text(recorded.replace("BLOCKED: need the users table schema", said))
        argv = BUILTIN["claude-code"].argv
        template = (sys.executable, str(FAKES / "fake_claude.py"), "--fake-stream", str(stream))
        plan = Plan("t", (), presets=(("claude-code", (*template, *argv[1:])),))
        return PresetAgent("claude-code", plan), Task("t", agent="claude-code", prompt="p")
    program = (sys.executable, "-c", f"print('working'); print({line!r})")
    plan = Plan("t", (), presets=((kind, program),))
    return PresetAgent(kind, plan), Task("t", agent=kind, prompt="p")


@pytest.mark.parametrize("kind", ["command", "codex", "aider", "claude-code"])
@pytest.mark.parametrize(("line", "reason"), LINES[:3])
async def test_the_same_line_blocks_every_kind_of_agent(
    kind: str, line: str, reason: str, tmp_path: Path
) -> None:
    agent, task = _agent(kind, line, tmp_path)
    run_id = f"test-output-{uuid.uuid4().hex}"
    recorder = Recorder()
    ctx = AgentContext(
        agent_id="t",
        task=task,
        attempt=1,
        prompt=task.prompt,
        script=(),
        workspace=tmp_path,
        responses=tmp_path / "responses",
        env=child_env(agent_id="t", run_id=run_id, depth=1),
        emit=recorder.emit,
    )
    await agent.run(ctx)
    assert recorder.terminal() == [Blocked(reason)]
    assert await wait_until_no_marked(run_id) == []
