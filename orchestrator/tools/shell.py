"""The shell tool of API agents: one command in the workspace, bounded in time and output.

Commands run through `orchestrator.process.spawn.run_streaming`, in their own process group,
stopped on timeout, and (given a ``sandbox``) confined like every agent process: their own PID
namespace (nothing they start outlives the call, whatever it does to its session), a
read-only view of the machine but for the workspace and a private temp directory, no view
of other processes (the orchestrator's environment and memory among them). Without one
they run with the agent's user rights; the environment (no API key) is guaranteed either
way.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections import deque
from collections.abc import Callable, Mapping

from orchestrator.plan.model import SECRET_NAMES
from orchestrator.process.lines import Stream
from orchestrator.process.spawn import run_streaming
from orchestrator.sandbox.confinement import Confinement
from orchestrator.tools.workspace import ToolError, ToolOutcome, Workspace, encodable

OUTPUT_MAX_BYTES = 30_000
COMMAND_GRACE = 2.0


def command_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the API key: neither by name nor under another name by value."""
    secrets = {env.get(n) for n in SECRET_NAMES} | {os.environ.get(n) for n in SECRET_NAMES}
    secrets.discard(None)
    secrets.discard("")
    return {k: v for k, v in env.items() if k not in SECRET_NAMES and v not in secrets}


class _CappedOutput:
    """Output lines in arrival order: the first and the last ``cap / 2`` bytes, and a count."""

    def __init__(self, cap: int) -> None:
        self._half = cap // 2
        self._head: list[str] = []
        self._head_bytes = 0
        self._tail: deque[str] = deque()
        self._tail_bytes = 0
        self._dropped = 0

    def add(self, line: str) -> None:
        size = len(line.encode("utf-8", "replace")) + 1
        if not self._tail and self._head_bytes + size <= self._half:
            self._head.append(line)
            self._head_bytes += size
            return
        self._tail.append(line)
        self._tail_bytes += size
        while self._tail_bytes > self._half and self._tail:
            gone = self._tail.popleft()
            self._tail_bytes -= len(gone.encode("utf-8", "replace")) + 1
            self._dropped += len(gone.encode("utf-8", "replace")) + 1

    def text(self) -> str:
        lines = list(self._head)
        if self._dropped:
            lines.append(f"[... {self._dropped} bytes of output truncated ...]")
        lines += self._tail
        return "\n".join(lines)


async def run_command(
    ws: Workspace,
    command: str,
    *,
    env: Mapping[str, str],
    timeout: float,  # noqa: ASYNC109 - the command's limit, reported to the model as a result
    on_output: Callable[[Stream, str], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    on_activity: Callable[[], None] | None = None,
    grace: float = COMMAND_GRACE,
    max_output: int = OUTPUT_MAX_BYTES,
    sandbox: Confinement | None = None,
) -> ToolOutcome:
    """Run ``command`` with bash in the workspace, in its own process group, for ``timeout`` s.

    ``env`` comes from the caller (`orchestrator.process.env.child_env`); the API key is
    removed again here. ``on_output`` sees every line as it comes (for the progress file),
    ``on_start`` the pid, which is also the group id, ``on_activity`` every chunk of output
    (a line or not). On timeout the group gets SIGTERM,
    ``grace`` seconds, then SIGKILL; the result says so and keeps the output so far.
    """
    if not isinstance(command, str) or not command.strip():
        raise ToolError("the command is empty")
    if "\x00" in command:
        raise ToolError("the command contains a NUL byte")
    if not encodable(command):
        raise ToolError("the command is not valid Unicode text (lone surrogate)")
    output = _CappedOutput(max_output)

    def on_line(stream: Stream, line: str) -> None:
        output.add(line)
        if on_output is not None:
            on_output(stream, line)

    child_env = command_env(env)
    bash = shutil.which("bash", path=child_env.get("PATH", os.defpath))
    argv, shell = ([bash, "-c", command], False) if bash else ([command], True)
    try:
        async with asyncio.timeout(timeout):
            code = await run_streaming(
                argv,
                cwd=ws.root,
                env=child_env,
                on_line=on_line,
                on_start=on_start or _ignore,
                on_activity=on_activity,
                grace=grace,
                shell=shell,
                sandbox=sandbox,
            )
    except TimeoutError:
        text = output.text()
        return ToolOutcome(
            f"timed out after {timeout:g}s; the command and its children were stopped"
            + (f"\noutput so far:\n{text}" if text else "\n(no output)"),
            is_error=True,
        )
    except OSError as e:
        raise ToolError(f"could not start the command: {e.strerror or e}") from None
    text = output.text()
    status = f"exit code {code}" if code >= 0 else f"killed by signal {-code}"
    return ToolOutcome(f"{text}\n[{status}]" if text else f"[{status}, no output]", code != 0)


def _ignore(pid: int) -> None:
    pass
