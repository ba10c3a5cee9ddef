"""The command agent: argv templates, events from output and exit codes, cancellation.

Runs the fake programs of ``tests/fakes`` for real; each test's children carry a unique
ORCHESTRATOR_RUN_ID and none may be left when the test ends.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fakes import RUN_ID_VAR, Recorder, fake, is_running, wait_until_no_marked

from orchestrator.agents.base import AgentContext
from orchestrator.agents.command import CommandAgent, command_argv, missing_program
from orchestrator.agents.output import outcome
from orchestrator.events import (
    AgentEvent,
    Blocked,
    Failed,
    Finished,
    Output,
    Started,
)
from orchestrator.plan.model import Task

HANG = 10.0
"""Gross bound that only detects hangs."""


@dataclass
class Harness:
    run_id: str
    workspace: Path
    recorder: Recorder

    def context(
        self, task: Task, *, prompt: str = "do the thing", grace: float = 5.0
    ) -> AgentContext:
        env = dict(os.environ)
        env[RUN_ID_VAR] = self.run_id
        return AgentContext(
            agent_id=task.id,
            task=task,
            attempt=1,
            prompt=prompt,
            script=(),
            workspace=self.workspace,
            responses=self.workspace / "agent-responses",
            env=env,
            emit=self.recorder.emit,
            on_process=self.recorder.pids.append,
            grace=grace,
        )

    async def run(self, task: Task, *, prompt: str = "do the thing") -> Recorder:
        await CommandAgent().run(self.context(task, prompt=prompt))
        return self.recorder


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    run_id = f"test-command-{uuid.uuid4().hex}"
    yield Harness(run_id, tmp_path, Recorder())
    left = await wait_until_no_marked(run_id)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert left == [], f"processes outlived the scenario: {left}"


def command_task(*command: str, shell: bool = False) -> Task:
    return Task(id="t1", agent="command", command=tuple(command), shell=shell)


# --- outcomes -------------------------------------------------------------------------------


async def test_success_starts_streams_and_finishes_with_the_last_stdout_line(
    harness: Harness,
) -> None:
    rec = await harness.run(command_task(*fake("exit_with", 0)))
    started = rec.events[0]
    assert isinstance(started, Started)
    assert started.pid is not None
    assert rec.pids == [started.pid]
    assert "exit_with.py" in started.detail
    assert rec.lines() == ["first", "the summary line", "   "]
    assert rec.lines("stderr") == ["oops"]
    assert rec.terminal() == [Finished(summary="the summary line")]
    assert rec.events[-1] == Finished(summary="the summary line")


async def test_a_long_summary_is_shortened(harness: Harness) -> None:
    rec = await harness.run(command_task(sys.executable, "-c", "print('s' * 1000)"))
    [finished] = rec.terminal()
    assert isinstance(finished, Finished)
    assert len(finished.summary) <= 200
    assert finished.summary.endswith("…")


async def test_exit_3_is_an_error(harness: Harness) -> None:
    rec = await harness.run(command_task(*fake("exit_with", 3)))
    assert rec.terminal() == [Failed("exit code 3", kind="error")]


async def test_exit_127_is_a_configuration_error(harness: Harness) -> None:
    rec = await harness.run(command_task(*fake("exit_with", 127)))
    [failed] = rec.terminal()
    assert isinstance(failed, Failed)
    assert failed.kind == "config"


async def test_a_shell_command_that_is_not_found_is_a_configuration_error(
    harness: Harness,
) -> None:
    rec = await harness.run(command_task("no-such-program-7f3a --flag", shell=True))
    [failed] = rec.terminal()
    assert isinstance(failed, Failed)
    assert failed.kind == "config"
    assert "127" in failed.error


async def test_a_missing_program_fails_as_configuration_without_starting(
    harness: Harness,
) -> None:
    rec = await harness.run(command_task("no-such-program-7f3a", "{prompt}"))
    assert rec.of(Started) == []
    assert rec.pids == []
    [failed] = rec.events
    assert isinstance(failed, Failed)
    assert failed.kind == "config"
    assert "no-such-program-7f3a" in failed.error


async def test_a_program_that_is_not_executable_is_a_configuration_error(
    harness: Harness,
) -> None:
    script = harness.workspace / "agent.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    rec = await harness.run(command_task(str(script)))
    [failed] = rec.events
    assert isinstance(failed, Failed)
    assert failed.kind == "config"


async def test_a_task_without_a_command_is_a_configuration_error(harness: Harness) -> None:
    rec = await harness.run(command_task())
    assert rec.events == [Failed("task 't1' has no command", kind="config")]


async def test_an_os_error_after_the_start_is_not_mistaken_for_a_spawn_error(
    harness: Harness,
) -> None:
    def emit(event: AgentEvent) -> None:
        if isinstance(event, Output):
            raise OSError(28, "No space left on device")

    ctx = harness.context(command_task(*fake("sleeper")))
    ctx.emit = emit
    with pytest.raises(OSError, match="No space left"):
        await CommandAgent().run(ctx)


async def test_a_program_killed_by_a_signal_fails_saying_so(harness: Harness) -> None:
    rec = await harness.run(command_task(*fake("kill_self")))
    assert rec.terminal() == [Failed("killed by signal 9 (SIGKILL)")]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (0, Finished(summary="last")),
        (1, Failed("exit code 1")),
        (2, Failed("exit code 2")),
        (126, Failed("exit code 126: the command is not executable", kind="config")),
        (127, Failed("exit code 127: the command was not found", kind="config")),
        (-15, Failed("killed by signal 15 (SIGTERM)")),
        (-200, Failed("killed by signal 200")),
    ],
)
def test_outcome(code: int, expected: AgentEvent) -> None:
    assert outcome(code, "last") == expected


# --- blockers -------------------------------------------------------------------------------


async def test_a_blocked_line_blocks_the_attempt_once_and_output_goes_on(harness: Harness) -> None:
    rec = await harness.run(command_task(*fake("blocked")))
    assert rec.terminal() == [Blocked("need schema")]
    assert rec.lines() == ["working", "  BLOCKED: need schema", "still here"]
    assert rec.lines("stderr") == ["BLOCKED: a second blocker"]
    assert rec.events.index(Blocked("need schema")) > rec.events.index(
        Output("  BLOCKED: need schema")
    )


async def test_a_chunk_of_lines_comes_in_one_call_split_at_its_blocker(harness: Harness) -> None:
    """Lines read at once reach ``emit_output`` together; a blocker among them comes right
    after its own line, before the lines after it (one write: one read, PIPE_BUF atomic)."""
    said: list[object] = []
    ctx = harness.context(
        # One write(2) (print would make two, text then newline: agents run unbuffered).
        command_task(
            sys.executable,
            "-c",
            "import os; os.write(1, b'a\\nBLOCKED: x\\nb\\nBLOCKED: y\\nlast\\n')",
        )
    )
    ctx.emit = said.append
    ctx.emit_output = lambda stream, lines: said.append((stream, list(lines)))
    await CommandAgent().run(ctx)
    assert said[1:] == [
        ("stdout", ["a", "BLOCKED: x"]),
        Blocked("x"),
        ("stdout", ["b", "BLOCKED: y", "last"]),
    ]


async def test_a_blocked_attempt_stays_blocked_whatever_the_exit_code(harness: Harness) -> None:
    rec = await harness.run(command_task(*fake("blocked", 5)))
    assert rec.terminal() == [Blocked("need schema")]


async def test_a_blocker_on_stderr_counts(harness: Harness) -> None:
    code = "import sys; print('\\tBLOCKED:   no credentials  ', file=sys.stderr)"
    rec = await harness.run(command_task(sys.executable, "-c", code))
    assert rec.terminal() == [Blocked("no credentials")]


async def test_blocked_must_start_the_line(harness: Harness) -> None:
    rec = await harness.run(command_task(sys.executable, "-c", "print('not BLOCKED: really')"))
    assert rec.terminal() == [Finished(summary="not BLOCKED: really")]


# --- the argv template ----------------------------------------------------------------------


def test_placeholders_are_filled_in_per_argument() -> None:
    task = command_task("agent", "--message={prompt}", "--id", "{agent_id}", "{workspace}/x")
    argv = command_argv(task, prompt="hi there", agent_id="t1.2", workspace=Path("/ws"))
    assert argv == ["agent", "--message=hi there", "--id", "t1.2", "/ws/x"]


def test_other_braces_survive() -> None:
    task = command_task("jq", "{.name}", "{}", "{{prompt}}", "{0}", "{prompt")
    argv = command_argv(task, prompt="P", agent_id="a", workspace=Path("/ws"))
    assert argv == ["jq", "{.name}", "{}", "{P}", "{0}", "{prompt"]


def test_a_prompt_containing_placeholders_is_not_expanded_again() -> None:
    task = command_task("agent", "{prompt}", "{agent_id}")
    argv = command_argv(
        task, prompt="use {workspace} and {agent_id}", agent_id="a", workspace=Path("/ws")
    )
    assert argv == ["agent", "use {workspace} and {agent_id}", "a"]


def test_shell_placeholders_are_quoted() -> None:
    task = command_task("printf '%s\\n' {prompt} > {workspace}/out", shell=True)
    argv = command_argv(task, prompt="it's $(rm -rf /)", agent_id="a", workspace=Path("/my ws"))
    assert argv == ["printf '%s\\n' 'it'\"'\"'s $(rm -rf /)' > '/my ws'/out"]


async def test_the_filled_in_command_runs_in_the_workspace(harness: Harness) -> None:
    task = command_task(*fake("show_args", "{prompt}", "{agent_id}", "{workspace}", "{other}"))
    rec = await harness.run(task, prompt="multi\nline {agent_id} prompt")
    assert rec.lines() == [
        "arg=multi",
        "line {agent_id} prompt",
        "arg=t1",
        f"arg={harness.workspace}",
        "arg={other}",
        f"cwd={harness.workspace}",
    ]


async def test_a_hostile_prompt_stays_one_argument_in_a_shell_task(harness: Harness) -> None:
    rec = await harness.run(
        command_task("printf '%s\\n' {prompt}", shell=True), prompt="a; echo pwned $HOME `id`"
    )
    assert rec.lines() == ["a; echo pwned $HOME `id`"]


async def test_started_shows_the_template_not_the_prompt(harness: Harness) -> None:
    rec = await harness.run(
        command_task(sys.executable, "-c", "pass", "{prompt}"), prompt="x" * 500
    )
    [started] = rec.of(Started)
    assert isinstance(started, Started)
    assert "{prompt}" in started.detail
    assert len(started.detail) <= 120


async def test_the_environment_is_the_contexts(harness: Harness) -> None:
    code = "import os; print(os.environ['ORCHESTRATOR_RUN_ID'])"
    rec = await harness.run(command_task(sys.executable, "-c", code))
    assert rec.lines() == [harness.run_id]


# --- stopping from outside ------------------------------------------------------------------


async def test_cancellation_stops_the_group_and_propagates(harness: Harness) -> None:
    ctx = harness.context(command_task(*fake("spawn_tree")), grace=0.2)
    task = asyncio.create_task(CommandAgent().run(ctx))
    await harness.recorder.wait_for(lambda e: e == Output("ready"))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert harness.recorder.terminal() == []
    assert not is_running(harness.recorder.pids[0])
    assert await wait_until_no_marked(harness.run_id) == []


async def test_a_scheduler_timeout_kills_a_child_that_ignores_sigterm(harness: Harness) -> None:
    ctx = harness.context(command_task(*fake("ignore_term")), grace=0.2)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.0):
            await CommandAgent().run(ctx)
    assert Output("term ignored", "stderr") in harness.recorder.events
    assert not is_running(harness.recorder.pids[0])


# --- missing_program ------------------------------------------------------------------------


def test_missing_program_finds_installed_programs() -> None:
    assert missing_program(command_task("sh", "-c", "true")) is None
    assert missing_program(command_task(sys.executable)) is None


def test_missing_program_names_what_is_missing() -> None:
    assert (
        missing_program(command_task("no-such-program-7f3a", "{prompt}")) == "no-such-program-7f3a"
    )


def test_missing_program_uses_the_given_path(tmp_path: Path) -> None:
    tool = tmp_path / "my-agent"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert missing_program(command_task("my-agent")) == "my-agent"
    assert missing_program(command_task("my-agent"), path=str(tmp_path)) is None


def test_missing_program_checks_paths_for_execute_permission(tmp_path: Path) -> None:
    plain = tmp_path / "agent.sh"
    plain.write_text("#!/bin/sh\n")
    assert missing_program(command_task(str(plain))) == str(plain)
    plain.chmod(0o755)
    assert missing_program(command_task(str(plain))) is None


def test_missing_program_takes_relative_paths_from_the_workspace(tmp_path: Path) -> None:
    tool = tmp_path / "bin" / "agent"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert missing_program(command_task("./bin/agent"), workspace=tmp_path) is None
    assert missing_program(command_task("{workspace}/bin/agent"), workspace=tmp_path) is None
    assert missing_program(command_task("./bin/other"), workspace=tmp_path) == "./bin/other"


@pytest.mark.parametrize(
    ("line", "missing"),
    [
        ("no-such-program-7f3a --flag && echo done", "no-such-program-7f3a"),
        ("sh -c 'exit 0' | no-such-program-7f3a", None),  # sh exists; the rest is the shell's
        ("for i in 1 2; do no-such-program-7f3a; done", None),
        ("X=1 no-such-program-7f3a", None),
        ("$HOME/no-such-program-7f3a", None),
        ("{workspace}/no-such-program-7f3a", None),
        ("echo hi", None),
    ],
)
def test_a_command_line_is_checked_only_when_it_plainly_names_its_program(
    line: str, missing: str | None
) -> None:
    assert missing_program(command_task(line, shell=True)) == missing
