"""The scripted agent: deterministic, offline, and really acting on the workspace.

It runs the steps of a plan's ``script:`` (or ``retry_script:`` on a later attempt) in order:
``say`` speaks, ``sleep`` waits, ``write`` writes a workspace file, ``run`` runs a shell
command with its output streamed line by line, ``block`` reports a blocker and ``fail``
fails; both end the attempt. The demo and the tests run on it.
"""

from __future__ import annotations

import asyncio
from typing import assert_never

from orchestrator.agents.base import AgentContext
from orchestrator.events import Blocked, Failed, Finished, Started, Text, ToolCall
from orchestrator.plan.model import Block, Fail, Run, Say, Sleep, Write
from orchestrator.process import spawn
from orchestrator.tools.files import write_file
from orchestrator.tools.workspace import ToolError, Workspace


class ScriptedAgent:
    """Runs a fixed list of steps; see the module docstring."""

    uses_model: bool = False
    pass_env: tuple[str, ...] = ()

    async def run(self, ctx: AgentContext) -> None:
        ctx.emit(Started(detail=f"scripted ({len(ctx.script)} steps)"))
        workspace: Workspace | None = None  # built on the first write: it costs ~20 lstat calls
        said = ""
        for step in ctx.script:  # few locals: an agent asleep in a step holds this frame
            match step:
                case Say(text=said):
                    ctx.emit(Text(said + "\n"))
                case Sleep(seconds=seconds):
                    await asyncio.sleep(seconds)
                case Write():
                    if workspace is None:
                        workspace = Workspace(ctx.workspace, responses=ctx.responses)
                    if not await _write(ctx, workspace, step):
                        return
                case Run():
                    if not await _run(ctx, step.command):
                        return
                case Block(reason=reason):
                    ctx.emit(Blocked(reason))
                    return
                case Fail(reason=reason):
                    ctx.emit(Failed(reason))
                    return
                case _:
                    assert_never(step)
        ctx.emit(Finished(said))


async def _write(ctx: AgentContext, workspace: Workspace, step: Write) -> bool:
    """Write a workspace file; False (after saying why) when the workspace refused it."""
    ctx.emit(ToolCall("write", f"{step.path} ({len(step.content)} chars)"))
    try:
        await asyncio.to_thread(write_file, workspace, step.path, step.content)
    except ToolError as exc:
        ctx.emit(Failed(f"write {step.path}: {exc}"))
        return False
    return True


async def _run(ctx: AgentContext, command: str) -> bool:
    """Run a shell command, its output streamed; False (after saying so) when it failed."""
    ctx.emit(ToolCall("run", command))
    code = await spawn.run_streaming(
        ["/bin/sh", "-c", command],
        cwd=ctx.workspace,
        env=ctx.env,
        on_lines=ctx.output,
        on_start=ctx.on_process,
        on_activity=ctx.on_activity,
        grace=ctx.grace,
        sandbox=ctx.sandbox,
    )
    if code != 0:
        ctx.emit(Failed(f"command failed with exit code {code}: {command}"))
        return False
    return True
