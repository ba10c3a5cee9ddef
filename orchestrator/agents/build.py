"""The build check: the plan's build commands, run like any agent, with the failure summarised.

A build is an agent of its own kind (``+build<n>``), so it gets a progress file, a timeout,
process-group stopping and cancellation from the same machinery as every other agent. Its
structured result (exit code, output tail, failing pytest ids) is a `BuildChecked` event, which
the recovery policy reads.
"""

from __future__ import annotations

import re
import shlex
from collections import deque

from orchestrator.agents.base import AgentContext
from orchestrator.events import BuildChecked, Failed, Finished, Output, Started, ToolCall
from orchestrator.process import spawn

TAIL_LINES = 60
_PYTEST_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+::\S+|\S+\.py)(?: - .*)?$")


def failing_tests(lines: list[str]) -> tuple[str, ...]:
    """Test ids from pytest's short summary (``FAILED path::test - msg`` / ``ERROR ...``)."""
    found: list[str] = []
    for line in lines:
        m = _PYTEST_FAILED.match(line.strip())
        if m and m.group(1) not in found:
            found.append(m.group(1))
    return tuple(found)


class BuildAgent:
    """Runs the build command in the workspace: a command line in ``sh -c``, or a program and
    its arguments without a shell."""

    uses_model: bool = False
    pass_env: tuple[str, ...] = ()

    async def run(self, ctx: AgentContext) -> None:
        task = ctx.task
        command = task.command[0] if task.shell else shlex.join(task.command)
        argv = ["/bin/sh", "-c", command] if task.shell else list(task.command)
        ctx.emit(Started(detail=f"build check: {command}"))
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        every: list[str] = []

        def on_line(stream: str, line: str) -> None:
            tail.append(line)
            if line.startswith(("FAILED ", "ERROR ")) and len(every) < 1000:
                every.append(line)
            ctx.emit(Output(line, "stderr" if stream == "stderr" else "stdout"))

        ctx.emit(ToolCall("run", command))
        started = False

        def on_start(pid: int) -> None:
            nonlocal started
            started = True
            ctx.on_process(pid)

        try:
            code = await spawn.run_streaming(
                argv,
                cwd=ctx.workspace,
                env=ctx.env,
                on_line=on_line,
                on_start=on_start,
                on_activity=ctx.on_activity,
                grace=ctx.grace,
                sandbox=ctx.sandbox,
            )
        except OSError as exc:
            if started:
                raise
            ctx.emit(BuildChecked(127, command, f"cannot start {argv[0]!r}: {exc.strerror}"))
            ctx.emit(Failed(f"cannot start {argv[0]!r}: {exc.strerror or exc}", kind="config"))
            return
        if code != 0:
            result = BuildChecked(code, command, "\n".join(tail), failing_tests(every))
            ctx.emit(result)
            config = code in (126, 127)
            ctx.emit(Failed(result.summary(), kind="config" if config else "error"))
            return
        ctx.emit(BuildChecked(0, command))
        ctx.emit(Finished("build passed"))
