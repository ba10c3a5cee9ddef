"""CLI agent presets: argv templates, limits passed down, and real runs of fake and real CLIs.

The fake ``claude`` (``tests/fakes/fake_claude.py``) replays stream-json recorded from the real
CLI; the last tests run the real Claude Code binary bundled in claude-agent-sdk against the
local fake Messages API. Every child carries a unique ORCHESTRATOR_RUN_ID and none may be left.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from claudecode import (
    conversation_has_tool_result,
    home_env,
    is_main_request,
    needs_real_claude,
    real_claude,
)
from conftest import processes_with_marker
from fakeapi import FakeMessagesAPI, Reply, text, tool_use
from fakes import FAKES, RUN_ID_VAR, Recorder, wait_until_no_marked

from orchestrator.agents.base import AgentContext
from orchestrator.agents.pool import AgentPool
from orchestrator.agents.presets.agent import PresetAgent
from orchestrator.agents.presets.program import bundled_claude, missing_preset_program
from orchestrator.agents.presets.table import (
    BLOCKED_NOTE,
    BUILTIN,
    claude_code_env,
    claude_code_flags,
    preset_argv,
    preset_for,
    preset_pass_env,
)
from orchestrator.engine.governor import Governor
from orchestrator.engine.scheduler import Run
from orchestrator.engine.state import RunSettings
from orchestrator.events import (
    Blocked,
    Failed,
    Finished,
    Output,
    Started,
    ToolCall,
    ToolResult,
    Usage,
)
from orchestrator.plan.model import SECRET_NAMES, Limits, Plan, Task
from orchestrator.process.env import child_env

HANG = 10.0
"""Gross bound that only detects hangs."""
FAKE_CLAUDE = str(FAKES / "fake_claude.py")
CANARY_KEY = "sk-ant-canary-" + "7" * 24


def fake_template(*fake_args: str) -> tuple[str, ...]:
    """The claude-code template with the fake in place of ``claude``."""
    argv = BUILTIN["claude-code"].argv
    return (sys.executable, FAKE_CLAUDE, *fake_args, *argv[1:])


@dataclass
class Harness:
    run_id: str
    workspace: Path
    tmp: Path
    recorder: Recorder = field(default_factory=Recorder)

    def context(
        self,
        task: Task,
        *,
        governor: Governor | None = None,
        depth: int = 0,
        grace: float = 5.0,
        env: dict[str, str] | None = None,
    ) -> AgentContext:
        return AgentContext(
            agent_id=task.id,
            task=task,
            attempt=1,
            prompt=task.prompt,
            script=(),
            workspace=self.workspace,
            responses=self.tmp / "responses",
            env=child_env(
                agent_id=task.id,
                run_id=self.run_id,
                depth=depth + 1,
                extra={**dict(task.env), **(env or {})},
            ),
            emit=self.recorder.emit,
            on_process=self.recorder.pids.append,
            grace=grace,
            depth=depth,
            budget=governor,
        )

    async def run(self, agent: PresetAgent, task: Task, **kw: Any) -> Recorder:
        await agent.run(self.context(task, **kw))
        return self.recorder

    def argv_file(self) -> Path:
        return self.tmp / "argv.json"

    def seen(self) -> dict[str, Any]:
        """What the fake recorded with ``--fake-argv``: its argv and environment."""
        data: dict[str, Any] = json.loads(self.argv_file().read_text())
        return data


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    ws = tmp_path / "ws"
    ws.mkdir()
    h = Harness(f"test-presets-{uuid.uuid4().hex}", ws, tmp_path)
    yield h
    left = await wait_until_no_marked(h.run_id)
    for pid in left:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    assert left == [], f"processes outlived the scenario: {left}"


def plan_with(*fake_args: str, **limits: Any) -> Plan:
    return Plan(
        "t",
        (),
        limits=Limits(**limits),
        presets=(("claude-code", fake_template(*fake_args)),),
    )


def cc_task(prompt: str = "Create hello.py", **kw: Any) -> Task:
    return Task("cc", agent="claude-code", prompt=prompt, **kw)


# --- the preset table and argv templates --------------------------------------------------------


def test_builtin_presets_cover_the_plan_presets() -> None:
    from orchestrator.plan.model import PRESETS

    assert set(BUILTIN) == set(PRESETS)


def test_claude_code_argv_puts_task_settings_in_flags_and_the_prompt_after_the_separator() -> None:
    task = cc_task(
        "- fix the bug",
        model="claude-haiku-4-5",
        max_turns=7,
        permission_mode="acceptEdits",
        allowed_tools=("Bash(git *)", "Edit"),
        args=("--effort", "low"),
    )
    flags = claude_code_flags(task, budget_left=2.345678, levels_left=1)
    argv = preset_argv(
        BUILTIN["claude-code"],
        task,
        prompt=task.prompt,
        agent_id="cc",
        workspace=Path("/w"),
        flags=flags,
    )
    assert argv == [
        "claude", "-p", "--output-format", "stream-json", "--verbose",
        "--model", "claude-haiku-4-5", "--max-turns", "7",
        "--permission-mode", "acceptEdits",
        "--allowedTools=Bash(git *)", "--allowedTools=Edit",
        "--max-budget-usd", "2.3456",
        "--append-system-prompt", BLOCKED_NOTE,
        "--effort", "low",
        "--", "- fix the bug",
    ]  # fmt: skip


def test_no_budget_means_no_cap_and_no_permissions_mean_the_unattended_default() -> None:
    flags = claude_code_flags(cc_task(), budget_left=math.inf, levels_left=2)
    assert flags[:4] == ["--model", Task("t").model, "--max-turns", str(Task("t").max_turns)]
    assert flags[4:7] == ["--permission-mode", "acceptEdits", "--allowedTools=Bash"]
    joined = " ".join(flags)
    for absent in ("--max-budget-usd", "--disallowed"):
        assert absent not in joined


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"permission_mode": "plan"}, ["--permission-mode", "plan"]),
        ({"allowed_tools": ("Edit",)}, ["--allowedTools=Edit"]),
        ({"permission_mode": "default", "allowed_tools": ("Read",)},
         ["--permission-mode", "default", "--allowedTools=Read"]),
    ],
)  # fmt: skip
def test_a_task_that_sets_permissions_replaces_the_default_as_a_whole(
    given: dict[str, Any], expected: list[str]
) -> None:
    flags = claude_code_flags(cc_task(**given), budget_left=math.inf, levels_left=2)
    assert flags[4 : 4 + len(expected)] == expected
    assert flags[4 + len(expected)] == "--append-system-prompt"


def test_at_max_depth_the_subagent_tool_is_taken_away() -> None:
    flags = claude_code_flags(cc_task(), budget_left=math.inf, levels_left=0)
    assert "--disallowedTools=Agent" in flags
    assert "--disallowedTools=Task" in flags


def test_the_budget_cap_is_rounded_down() -> None:
    flags = claude_code_flags(cc_task(), budget_left=0.00019, levels_left=1)
    assert flags[flags.index("--max-budget-usd") + 1] == "0.0001"


def test_dependency_notes_go_into_the_appended_system_prompt() -> None:
    flags = claude_code_flags(
        cc_task(), budget_left=math.inf, levels_left=1, notes=("models: added User (models.md)",)
    )
    note = flags[flags.index("--append-system-prompt") + 1]
    assert note.startswith(BLOCKED_NOTE)
    assert note.endswith("\n- models: added User (models.md)")


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (
            "codex",
            [
                "codex", "exec", "--json", "--skip-git-repo-check", "--model", "o4",
                "--", "do {workspace} it",
            ],
        ),
        (
            "aider",
            [
                "aider", "--message=do {workspace} it", "--yes-always", "--no-auto-commits",
                "--model", "o4",
            ],
        ),
    ],
)  # fmt: skip
def test_other_presets_get_only_the_task_args(kind: str, expected: list[str]) -> None:
    task = Task("t", agent=kind, prompt="do {workspace} it", args=("--model", "o4"))
    argv = preset_argv(BUILTIN[kind], task, prompt=task.prompt, agent_id="t", workspace=Path("/w"))
    assert argv == expected


def test_a_plan_template_replaces_the_builtin_and_keeps_the_parser() -> None:
    preset = preset_for("codex", (("claude-code", ("x",)), ("codex", ("my-codex", "{prompt}"))))
    assert preset.argv == ("my-codex", "{prompt}")
    assert preset.parser == "lines"
    assert preset_for("aider", (("codex", ("y",)),)) == BUILTIN["aider"]


def test_a_template_without_flags_gets_neither_flags_nor_args() -> None:
    preset = preset_for("claude-code", (("claude-code", ("wrap", "{agent_id}", "{prompt}")),))
    task = cc_task(args=("--x",))
    argv = preset_argv(preset, task, prompt="p", agent_id="a1", workspace=Path("/w"), flags=["--f"])
    assert argv == ["wrap", "a1", "p"]


def test_what_each_preset_needs_is_named_for_the_scheduler_and_never_the_key() -> None:
    assert "CODEX_HOME" in preset_pass_env("codex")
    assert preset_pass_env("command") == ()
    for name in BUILTIN:
        assert not SECRET_NAMES & set(preset_pass_env(name))
        assert PresetAgent(name, Plan("t", ())).uses_model


@pytest.mark.parametrize(
    ("given", "levels", "concurrent", "depth"),
    [
        (None, 2, "4", "2"),
        ("1", 2, "1", "2"),  # a smaller value the task set stays
        ("99", 1, "4", "1"),  # a larger one is lowered
        ("junk", 0, "4", None),  # no level left: no depth variable (its minimum is 1)
    ],
)
def test_subagent_caps_come_from_the_plan_limits(
    given: str | None, levels: int, concurrent: str, depth: str | None
) -> None:
    env = {} if given is None else {"CLAUDE_CODE_MAX_CONCURRENT_SUBAGENTS": given}
    out = claude_code_env(env, Limits(max_concurrency=4), levels_left=levels)
    assert out["CLAUDE_CODE_MAX_CONCURRENT_SUBAGENTS"] == concurrent
    assert out.get("CLAUDE_CODE_MAX_SUBAGENT_SPAWN_DEPTH") == depth


# --- is the program there -----------------------------------------------------------------------


def test_a_missing_preset_program_is_named_with_what_to_install(tmp_path: Path) -> None:
    empty = str(tmp_path)
    assert missing_preset_program(Task("t", agent="codex"), path=empty) == (
        "codex",
        "npm install -g @openai/codex",
    )
    program, hint = missing_preset_program(Task("t", agent="aider"), path=empty) or ("", "")
    assert program == "aider"
    assert "aider-install" in hint


def test_a_plan_template_is_checked_instead_of_the_builtin(tmp_path: Path) -> None:
    presets = (("claude-code", ("no-such-claude-wrapper", "{prompt}")),)
    problem = missing_preset_program(cc_task(), presets=presets, path=str(tmp_path))
    assert problem is not None
    assert problem[0] == "no-such-claude-wrapper"
    assert "claude-code" in problem[1]
    ok = (("claude-code", (sys.executable, "{prompt}")),)
    assert missing_preset_program(cc_task(), presets=ok, path=str(tmp_path)) is None


def test_claude_on_path_is_found(tmp_path: Path) -> None:
    program = tmp_path / "claude"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    assert missing_preset_program(cc_task(), path=str(tmp_path)) is None


@pytest.mark.skipif(bundled_claude() is None, reason="claude-agent-sdk is not installed")
def test_without_claude_on_path_the_binary_in_the_sdk_wheel_counts(tmp_path: Path) -> None:
    assert missing_preset_program(cc_task(), path=str(tmp_path)) is None
    assert str(bundled_claude()).endswith("claude_agent_sdk/_bundled/claude")


# --- the fake claude through the agent ----------------------------------------------------------


async def test_a_replayed_run_gives_text_tools_usage_and_the_result(harness: Harness) -> None:
    agent = PresetAgent("claude-code", plan_with("--fake-stream", "write"))
    rec = await harness.run(agent, cc_task())
    (started,) = rec.of(Started)
    assert isinstance(started, Started)
    assert started.pid == rec.pids[0]
    assert started.detail.startswith("claude-code: ")
    assert "Create hello.py" not in started.detail
    assert rec.of(ToolCall) == [ToolCall("Write", "hello.py (15 chars)")]
    assert len(rec.of(ToolResult)) == 1
    assert rec.of(Usage) == [Usage(2200, 70, 0.00765)]
    assert rec.terminal() == [Finished("Created hello.py, which prints hello.")]


async def test_garbage_lines_are_kept_and_never_fatal(harness: Harness) -> None:
    agent = PresetAgent("claude-code", plan_with("--fake-garbage", "--fake-stream", "write"))
    rec = await harness.run(agent, cc_task())
    lines = [e.line for e in rec.of(Output) if isinstance(e, Output)]
    assert "plain text from a wrapper script" in lines
    assert "[1, 2, 3]" in lines
    assert "red warning" in lines  # escapes removed by the process layer
    assert any(line.startswith("bad ") and "\ufffd" in line for line in lines)
    assert not any("mystery" in line for line in lines)
    assert rec.terminal() == [Finished("Created hello.py, which prints hello.")]


async def test_an_error_result_fails_the_attempt_with_its_kind(harness: Harness) -> None:
    agent = PresetAgent("claude-code", plan_with("--fake-stream", "max_turns", "--fake-exit", "1"))
    rec = await harness.run(agent, cc_task())
    assert rec.terminal() == [Failed("Reached maximum number of turns (1)", kind="max_turns")]
    assert rec.of(Usage) == [Usage(1000, 50, 0.00375)]


async def test_a_blocked_run_reports_the_blocker_once(harness: Harness) -> None:
    agent = PresetAgent("claude-code", plan_with("--fake-stream", "blocked"))
    rec = await harness.run(agent, cc_task())
    assert rec.terminal() == [Blocked("need the users table schema")]


async def test_a_crash_without_result_fails_with_its_stderr(harness: Harness) -> None:
    plan = plan_with("--fake-stderr", "error: unknown option '-x'", "--fake-exit", "1")
    rec = await harness.run(PresetAgent("claude-code", plan), cc_task())
    assert rec.terminal() == [Failed("exit code 1: error: unknown option '-x'")]


async def test_a_program_that_cannot_start_is_a_config_failure(harness: Harness) -> None:
    plan = Plan("t", (), presets=(("claude-code", ("/nonexistent/claude", "{prompt}")),))
    rec = await harness.run(PresetAgent("claude-code", plan), cc_task())
    (failed,) = rec.terminal()
    assert isinstance(failed, Failed)
    assert failed.kind == "config"
    assert "npm install -g @anthropic-ai/claude-code" in failed.error
    assert rec.of(Started) == []


async def test_limits_reach_the_child_as_flags_and_environment(harness: Harness) -> None:
    plan = plan_with(
        "--fake-argv", str(harness.argv_file()), "--fake-stream", "write",
        max_concurrency=3, max_depth=2, budget_usd=1.0,
    )  # fmt: skip
    governor = Governor(plan.limits)
    governor.charge(0.25)
    await harness.run(PresetAgent("claude-code", plan), cc_task(), governor=governor, depth=1)
    seen = harness.seen()
    argv = seen["argv"]
    assert argv[argv.index("--max-budget-usd") + 1] == "0.7500"
    assert "--disallowedTools=Agent" not in argv
    assert argv[-2:] == ["--", "Create hello.py"]
    assert seen["env"]["CLAUDE_CODE_MAX_CONCURRENT_SUBAGENTS"] == "3"
    assert seen["env"]["CLAUDE_CODE_MAX_SUBAGENT_SPAWN_DEPTH"] == "1"
    assert seen["env"]["ORCHESTRATOR_DEPTH"] == "2"
    assert seen["env"]["DISABLE_AUTOUPDATER"] == "1"


async def test_at_max_depth_the_child_cannot_fan_out(harness: Harness) -> None:
    plan = plan_with("--fake-argv", str(harness.argv_file()), "--fake-stream", "write", max_depth=1)
    await harness.run(PresetAgent("claude-code", plan), cc_task(), depth=1)
    seen = harness.seen()
    assert "--disallowedTools=Agent" in seen["argv"]
    assert "--disallowedTools=Task" in seen["argv"]
    assert "CLAUDE_CODE_MAX_SUBAGENT_SPAWN_DEPTH" not in seen["env"]


async def test_with_the_budget_spent_nothing_starts(harness: Harness) -> None:
    plan = plan_with("--fake-stream", "write", budget_usd=1.0)
    governor = Governor(plan.limits)
    governor.charge(1.0)
    rec = await harness.run(PresetAgent("claude-code", plan), cc_task(), governor=governor)
    assert rec.of(Started) == []
    assert rec.terminal() == [Failed("budget: nothing is left of the run's budget", kind="budget")]


def everything_in(folder: Path) -> str:
    return "".join(p.read_text() for p in folder.iterdir() if p.is_file())


async def test_the_api_key_is_masked_in_everything_the_child_prints(
    make_run: Callable[..., Run], tmp_path: Path, responses: Path
) -> None:
    stream = tmp_path / "leak.jsonl"
    leak = {"type": "assistant", "message": {"content": [{"type": "text", "text": CANARY_KEY}]}}
    stream.write_text(json.dumps(leak) + "\n")
    path = fake_claude_on_path(tmp_path / "bin")
    opts = f"--fake-stream {stream} --fake-stderr key={CANARY_KEY}"
    task = cc_task(
        env=(("PATH", path), ("FAKE_CLAUDE_OPTS", opts), ("ANTHROPIC_API_KEY", CANARY_KEY))
    )
    run = make_run(task)
    await run.execute()
    written = everything_in(responses)
    assert CANARY_KEY not in written
    assert "key=[REDACTED]" in written


async def test_a_lines_preset_reads_output_like_the_command_agent(harness: Harness) -> None:
    plan = Plan("t", (), presets=(("codex", (sys.executable, str(FAKES / "blocked.py"))),))
    rec = await harness.run(PresetAgent("codex", plan), Task("t", agent="codex", prompt="p"))
    assert rec.terminal() == [Blocked("need schema")]
    assert Output("working") in rec.events


async def test_a_child_that_ignores_sigterm_is_stopped_as_a_tree(harness: Harness) -> None:
    agent = PresetAgent("claude-code", plan_with("--fake-hang", "2", "--fake-escape"))
    ctx = harness.context(cc_task(), grace=0.3)
    async with asyncio.TaskGroup() as tg:
        running = tg.create_task(agent.run(ctx))
        await harness.recorder.wait_for(lambda e: e == Output("ready"))
        while len(processes_with_marker(harness.run_id)) < 4:
            await asyncio.sleep(0.01)
        started = time.monotonic()
        running.cancel()
    took = time.monotonic() - started
    assert running.cancelled()
    assert took >= 0.29  # SIGTERM was ignored for the grace period, then SIGKILL
    # The escaped grandchild (a session of its own) is gone too, not left for a run's sweep.
    assert await wait_until_no_marked(harness.run_id) == []
    assert harness.recorder.terminal() == []


def test_the_agent_sweep_kills_only_that_agent_of_that_run() -> None:
    from orchestrator.process.orphans import sweep_run

    run, other_run = f"test-sweep-{uuid.uuid4().hex}", f"test-sweep-{uuid.uuid4().hex}"
    marks = [(run, "a"), (run, "b"), (other_run, "a")]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)"],
            env={**os.environ, RUN_ID_VAR: r, "ORCHESTRATOR_AGENT_ID": a},
            start_new_session=True,
        )
        for r, a in marks
    ]
    try:
        assert sweep_run(run, agent_id="a") == [procs[0].pid]
        assert procs[0].wait(HANG) == -9
        assert procs[1].poll() is None
        assert procs[2].poll() is None
    finally:
        for p in procs:
            p.kill()
            p.wait()


# --- through the scheduler ----------------------------------------------------------------------


def fake_claude_on_path(bindir: Path) -> str:
    """A ``claude`` program on PATH that runs the fake with ``$FAKE_CLAUDE_OPTS``."""
    bindir.mkdir(exist_ok=True)
    program = bindir / "claude"
    program.write_text(
        f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_CLAUDE}" $FAKE_CLAUDE_OPTS "$@"\n'
    )
    program.chmod(0o755)
    return f"{bindir}{os.pathsep}{os.environ.get('PATH', os.defpath)}"


async def test_through_the_scheduler_the_progress_file_and_the_budget_show_the_run(
    make_run: Callable[..., Run], tmp_path: Path
) -> None:
    path = fake_claude_on_path(tmp_path / "bin")
    task = cc_task(env=(("PATH", path), ("FAKE_CLAUDE_OPTS", "--fake-stream write")))
    run = make_run(task, budget_usd=5.0)
    await run.execute()
    rec = run.agents["cc"]
    assert rec.state == "succeeded"
    assert rec.cost_usd == pytest.approx(0.00765)
    assert (rec.tokens_in, rec.tokens_out) == (2200, 70)
    assert run.governor.spent_usd == pytest.approx(0.00765)
    md = (run.settings.responses / "cc.md").read_text()
    assert "-> Write: hello.py (15 chars)" in md
    assert "<- Write: File created successfully" in md
    assert "usage: 2200 in / 70 out tokens, $0.0076" in md
    assert md.rstrip().splitlines()[-1].startswith("status: succeeded")
    events = (run.settings.responses / "cc.events.jsonl").read_text().splitlines()
    kinds = [json.loads(line)["event"] for line in events]
    assert kinds.count("usage") == 1
    assert await wait_until_no_marked(run.settings.run_id) == []


async def test_through_the_scheduler_a_blocked_child_feeds_the_recovery_policy(
    make_run: Callable[..., Run], tmp_path: Path
) -> None:
    path = fake_claude_on_path(tmp_path / "bin")
    task = cc_task(env=(("PATH", path), ("FAKE_CLAUDE_OPTS", "--fake-stream blocked")))
    run = make_run(task, max_depth=0)
    await run.execute()
    assert run.agents["cc"].state == "blocked"
    assert run.agents["cc"].reason == "need the users table schema"
    assert run.exit_code() == 1


# --- the real Claude Code CLI against the fake Messages API -------------------------------------


def real_task(home: Path, **kw: Any) -> Task:
    """A claude-code task with its config and scratch files under ``home``. It reaches the
    fake API through the run's gateway (see `upstream`)."""
    return cc_task(env=home_env(home), model="claude-sonnet-4-5", **kw)


@pytest.fixture
def upstream(monkeypatch: pytest.MonkeyPatch) -> Callable[[FakeMessagesAPI], None]:
    """Make ``api`` the run's upstream, the canary its key (the orchestrator's environment)."""

    def point(api: FakeMessagesAPI) -> None:
        monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY_KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
        monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)

    return point


@needs_real_claude
async def test_real_claude_code_writes_a_file_and_reports_its_cost(
    make_run: Callable[..., Run],
    workspace: Path,
    tmp_path: Path,
    upstream: Callable[[FakeMessagesAPI], None],
) -> None:
    def respond(body: dict[str, Any], index: int) -> Reply | None:
        if not is_main_request(body):
            return None  # the default text reply
        if not conversation_has_tool_result(body):
            target = str(workspace / "hello.py")
            content = "print('hello')\n"
            return tool_use(
                "Write",
                {"file_path": target, "content": content},
                text="Creating hello.py.",
                input_tokens=1000,
                output_tokens=50,
            )
        return text("Created hello.py.", input_tokens=1200, output_tokens=20)

    async with FakeMessagesAPI(respond, api_key=CANARY_KEY) as api:
        upstream(api)
        run = make_run(real_task(tmp_path / "home"), budget_usd=5.0)
        await run.execute()
    rec = run.agents["cc"]
    md = (run.settings.responses / "cc.md").read_text()
    assert rec.state == "succeeded", md
    assert (workspace / "hello.py").read_text() == "print('hello')\n"
    assert "-> Write: hello.py (15 chars)" in md
    assert "<- Write: File created successfully" in md
    # claude-sonnet-4-5 at $3 / $15 per million tokens: 2200 in, 70 out.
    assert rec.cost_usd == pytest.approx(0.00765)
    assert run.governor.spent_usd == pytest.approx(0.00765)
    assert {(r.method, r.path) for r in api.requests} == {("POST", "/v1/messages")}
    assert all(r.body["model"] == "claude-sonnet-4-5" for r in api.requests)
    assert CANARY_KEY not in md
    assert await wait_until_no_marked(run.settings.run_id) == []


@needs_real_claude
@pytest.mark.parametrize("grace", [0.5, 0.0], ids=["sigterm", "sigkill-at-once"])
async def test_cancelling_real_claude_code_mid_run_leaves_no_process(
    make_run: Callable[..., Run],
    tmp_path: Path,
    grace: float,
    upstream: Callable[[FakeMessagesAPI], None],
) -> None:
    def respond(body: dict[str, Any], index: int) -> Reply | None:
        if not is_main_request(body):
            return None
        if not conversation_has_tool_result(body):
            command = f'{sys.executable} -c "import time; time.sleep(300)"'
            return tool_use("Bash", {"command": command, "description": "Wait a long time"})
        return text("Stopped waiting.")

    async with FakeMessagesAPI(respond, api_key=CANARY_KEY) as api:
        upstream(api)
        task = real_task(tmp_path / "home")
        run = make_run(task, grace=grace)
        marker = run.settings.run_id
        async with asyncio.TaskGroup() as tg:
            tg.create_task(run.execute())
            async with asyncio.timeout(60):
                while not any(_runs_sleep(pid) for pid in processes_with_marker(marker)):
                    await asyncio.sleep(0.05)
            assert run.cancel("cc") == ["cc"]
            assert await run.wait("cc") == "cancelled"
    # Claude Code runs Bash in a session of its own: without the agent's sweep its
    # `sleep(300)` would outlive the cancel (no run-wide sweep runs in this test).
    assert await wait_until_no_marked(marker) == []
    md = (run.settings.responses / "cc.md").read_text()
    assert "-> Bash: " in md


def _runs_sleep(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"time.sleep(300)" in f.read()
    except OSError:
        return False


# --- a plan that mixes kinds --------------------------------------------------------------------


async def test_a_plan_mixing_scripted_claude_and_claude_code_runs_offline(
    workspace: Path, responses: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip(
        "orchestrator.agents.claude.agent", reason="the claude (API) agent is not written yet"
    )
    if real_claude() is None:
        pytest.skip("the claude-code extra is not installed (pip install claude-agent-sdk)")

    def respond(body: dict[str, Any], index: int) -> Reply | None:
        if is_main_request(body):  # claude-code: write through its Write tool
            if not conversation_has_tool_result(body):
                target = str(workspace / "cc.txt")
                return tool_use("Write", {"file_path": target, "content": "from claude-code\n"})
            return text("Wrote cc.txt.")
        if any(t.get("name") == "write_file" for t in body.get("tools", [])):  # claude (API)
            if not conversation_has_tool_result(body):
                return tool_use("write_file", {"path": "api.txt", "content": "from claude\n"})
            return text("Wrote api.txt.")
        return None

    from orchestrator.plan.model import Say, Write

    async with FakeMessagesAPI(respond, api_key=CANARY_KEY) as api:
        # The claude agent's SDK reads both from the environment, as in a real run.
        monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY_KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
        tasks = (
            Task(
                "scaffold",
                agent="scripted",
                script=(Say("scaffolding"), Write("README.md", "# demo\n")),
            ),
            Task(
                "api",
                agent="claude",
                prompt="Write api.txt",
                depends_on=("scaffold",),
                model="claude-sonnet-4-5",
            ),
            replace(real_task(tmp_path / "home"), id="cc", depends_on=("scaffold",)),
        )
        plan = Plan(
            "mixed",
            tasks,
            workspace=workspace,
            limits=Limits(max_concurrency=4, grace=0.5, budget_usd=5.0),
        )
        settings = RunSettings(
            responses=responses,
            run_id=f"test-{uuid.uuid4().hex[:12]}",
            progress_interval=0.01,
        )
        pool = AgentPool(plan)
        try:
            run = Run(plan, settings, agents=pool)
            await run.execute()
        finally:
            await pool.aclose()
    states = {tid: t.state for tid, t in run.tasks.items()}
    assert states == {"scaffold": "succeeded", "api": "succeeded", "cc": "succeeded"}, states
    assert (workspace / "README.md").exists()
    assert (workspace / "cc.txt").read_text() == "from claude-code\n"
    assert (workspace / "api.txt").read_text() == "from claude\n"
    assert run.agents["cc"].cost_usd > 0
    assert await wait_until_no_marked(settings.run_id) == []
