"""The shell's monitors: `peek` (never blocks), `tail -f` and `wait` (block), from files alone.

They read the progress files and the journal, so they work from any terminal, while the
run goes on and after it ended, without talking to the orchestrator.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

import aiofiles

from orchestrator.errors import UnknownAgentError
from orchestrator.events import TERMINAL_STATES
from orchestrator.records.journal import JournalReader
from orchestrator.records.progress import safe_path
from orchestrator.records.rundir import RunDir, is_locked

POLL = 0.05


def progress_path(responses: Path, agent_id: str) -> Path:
    """The agent's progress file; an id that could not name one is an unknown agent."""
    try:
        return safe_path(responses, f"{agent_id}.md")
    except ValueError:
        raise UnknownAgentError(agent_id) from None


def _no_link(path: str, flags: int) -> int:
    """Open a progress file as the writer does: never through a link, never blocking."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)


def ended(line: str) -> bool:
    return line.startswith("status: ")


async def follow_file(
    path: Path, *, follow: bool, out: TextIO, alive: Callable[[], bool] = lambda: True
) -> bool:
    """Print the file; with ``follow``, keep printing until its final ``status:`` line.

    Following also stops once ``alive()`` says no orchestrator runs any more (after a last
    read): an agent whose orchestrator was killed never writes its status line. Returns
    whether the file ended with a status line.
    """
    async with aiofiles.open(path, encoding="utf-8", errors="replace", opener=_no_link) as fh:
        partial = ""
        gone = False
        while True:
            chunk = await fh.read()
            if chunk:
                text = partial + chunk
                *lines, partial = text.split("\n")
                for line in lines:
                    out.write(line + "\n")
                    if ended(line) and follow:
                        out.flush()
                        return True
                out.flush()
            elif not follow or gone:
                if partial:
                    out.write(partial + "\n")
                return ended(partial)
            elif not alive():
                gone = True  # one more read: what it wrote just before it went
            else:
                await asyncio.sleep(POLL)


async def wait_for(
    responses: Path,
    agent_ids: Sequence[str],
    *,
    any_: bool,
    out: TextIO,
) -> int:
    """Block until the agents ended: 0 all succeeded, 1 otherwise; unknown ids raise.

    A task id follows the task through its retries to where it settled. An agent that had
    not ended when its orchestrator went away counts as ``lost``.
    """
    rundir = RunDir(responses)
    reader = JournalReader(rundir.journal)
    reader.poll()
    known = reader.state.agents.keys() | reader.state.tasks.keys()
    for agent_id in agent_ids:
        if agent_id not in known:
            raise UnknownAgentError(agent_id)

    def state_of(agent_id: str) -> str | None:
        task = reader.state.tasks.get(agent_id)
        if task is not None and task.get("state") in TERMINAL_STATES:
            return str(task["state"])
        agent = reader.state.agents.get(agent_id)
        if task is None and agent is not None and agent.get("state") in TERMINAL_STATES:
            return str(agent["state"])
        return None

    async def settle() -> dict[str, str]:
        while True:
            reader.poll()
            states = {a: s for a in agent_ids if (s := state_of(a)) is not None}
            if (any_ and states) or len(states) == len(agent_ids):
                return states
            if not is_locked(rundir):
                reader.poll()
                states = {a: state_of(a) or "lost" for a in agent_ids}
                return states
            await asyncio.sleep(POLL)

    states = await settle()
    for agent_id, state in states.items():
        out.write(f"{agent_id}: {state}\n")
    return 0 if all(s == "succeeded" for s in states.values()) else 1
