"""The build check: the plan's build commands, run like any agent, with the failure summarised.

A build is an agent of its own kind (``build-<n>``), so it gets a progress file, a timeout,
process-group stopping and cancellation from the same machinery as every other agent. Its
structured result (exit code, output tail, failing pytest ids) is a `BuildChecked` event, which
the recovery policy reads.
"""

from __future__ import annotations

import re
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
    """Runs each build command in the workspace; the first failure ends the check."""

    uses_model: bool = False
    pass_env: tuple[str, ...] = ()

    async def run(self, ctx: AgentContext) -> None:
        commands = ctx.task.command
        ctx.emit(Started(detail=f"build check ({len(commands)} command(s))"))
        for command in commands:
            tail: deque[str] = deque(maxlen=TAIL_LINES)
            every: list[str] = []

            def on_line(
                stream: str, line: str, tail: deque[str] = tail, every: list[str] = every
            ) -> None:
                tail.append(line)
                if line.startswith(("FAILED ", "ERROR ")) and len(every) < 1000:
                    every.append(line)
                ctx.emit(Output(line, "stderr" if stream == "stderr" else "stdout"))

            ctx.emit(ToolCall("run", command))
            code = await spawn.run_streaming(
                ["/bin/sh", "-c", command],
                cwd=ctx.workspace,
                env=ctx.env,
                on_line=on_line,
                on_start=ctx.on_process,
                on_activity=ctx.on_activity,
                grace=ctx.grace,
                sandbox=ctx.sandbox,
            )
            if code != 0:
                result = BuildChecked(code, command, "\n".join(tail), failing_tests(every))
                ctx.emit(result)
                config = code in (126, 127)
                ctx.emit(Failed(result.summary(), kind="config" if config else "error"))
                return
        ctx.emit(BuildChecked(0, "; ".join(commands)))
        ctx.emit(Finished("build passed"))
