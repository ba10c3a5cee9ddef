"""The shell's monitors: `peek` (never blocks), `tail -f` and `wait` (block), from files alone.

They read the progress files and the journal, so they work from any terminal, while the
run goes on and after it ended, without talking to the orchestrator.

A name is an agent id or a task id of the current plan (the journal's run record lists the
plan's tasks, so a task is known before it starts). A task id stands for the task's latest
attempt, across ``--resume`` too: `locate` says which agent that is, or that the task has not
started yet and why (queued, or blocked on its dependencies).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import aiofiles

from orchestrator.errors import UnknownAgentError
from orchestrator.events import TERMINAL_STATES
from orchestrator.records.journal import JournalReader, JournalState
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


# --- what a name stands for -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Located:
    """What a name given to peek, tail or wait stands for right now."""

    name: str
    agent: str | None
    """The agent whose progress file to read; None while a task has not started."""
    task: str | None = None
    """The task, when the name is one of the plan's task ids."""
    final: str | None = None
    """The task's (or the agent's) final state, once it has one."""
    waiting: str = ""
    """For a task that has not started: ``queued`` or ``blocked on X, Y``."""


def plan_tasks(state: JournalState) -> set[str]:
    """Every task id of the plan the journal's run record was started with."""
    prints = state.run.get("fingerprints")
    return set(prints) if isinstance(prints, dict) else set()


def locate(state: JournalState, name: str) -> Located:
    """What ``name`` stands for in the journal ``state``; unknown names raise.

    A task id follows its latest attempt of this invocation of the run; before one started it
    is pending (with why), unless it already has its final state (kept by ``--resume``, or
    settled without starting, when ``<task>.md`` holds that).
    """
    if name in plan_tasks(state) or name in state.tasks:
        return _locate_task(state, name)
    agent = state.agents.get(name)
    if agent is None:
        raise UnknownAgentError(name)
    final = agent.get("state")
    return Located(name, name, final=str(final) if final in TERMINAL_STATES else None)


def _locate_task(state: JournalState, task_id: str) -> Located:
    record = state.tasks.get(task_id, {})
    final = record.get("state") if record.get("state") in TERMINAL_STATES else None
    attempts = sorted(
        (a for a in state.agents.values() if a.get("role", "task") == "task"
         and a.get("task") == task_id and isinstance(a.get("id"), str)),
        key=lambda a: int(a.get("attempt") or 1),
    )  # fmt: skip
    latest = attempts[-1] if attempts else None
    since = state.run.get("started") or 0.0
    if final is not None:
        return Located(task_id, str(latest["id"]) if latest else task_id, task_id, str(final))
    if latest is not None and (latest.get("started") or 0.0) >= since:
        return Located(task_id, str(latest["id"]), task_id)
    return Located(task_id, None, task_id, waiting=_why_waiting(state, task_id))


def _why_waiting(state: JournalState, task_id: str) -> str:
    deps: dict[str, Any] = state.run.get("depends_on") or {}
    waiting_on = [
        d for d in deps.get(task_id, ()) if state.tasks.get(d, {}).get("state") != "succeeded"
    ]
    if waiting_on:
        return f"blocked on {', '.join(waiting_on)}"
    return "queued"


def pending_line(where: Located, *, alive: bool) -> str:
    """What peek and tail say about a task that has not started."""
    if alive:
        return f"{where.name}: {where.waiting} (not started yet)"
    return f"{where.name}: not started ({where.waiting} when its orchestrator went away)"


def load_located(responses: Path, name: str) -> tuple[Located, bool]:
    """`locate` in the journal on disk, and whether an orchestrator runs there now."""
    rundir = RunDir(responses)
    reader = JournalReader(rundir.journal)
    reader.poll()
    progress_path(responses, name)  # a name that could never be a file is unknown at once
    return locate(reader.state, name), is_locked(rundir)


# --- tail -------------------------------------------------------------------------------------


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


async def follow_name(
    responses: Path, name: str, *, out: TextIO, alive: Callable[[], bool]
) -> bool:
    """`tail -f NAME`: follow the agent, or a task through its attempts until it settles.

    A task that has not started is waited for. Returns False when the orchestrator went away
    before the end (nothing more will be written), True otherwise.
    """
    reader = JournalReader(RunDir(responses).journal)
    reader.poll()
    shown: str | None = None
    gone = False
    while True:
        where = locate(reader.state, name)
        if where.agent is not None and where.agent != shown:
            shown = where.agent
            path = progress_path(responses, shown)
            if path.is_file():
                if not await follow_file(path, follow=True, out=out, alive=alive):
                    return False
                reader.poll()
                continue
            shown = None  # journaled a moment before its file was created
        if where.task is None or where.final is not None:
            return True
        if gone:
            return False
        gone = not alive()  # one more look at the journal before giving up
        await asyncio.sleep(0 if gone else POLL)
        reader.poll()


# --- wait -------------------------------------------------------------------------------------


async def wait_for(
    responses: Path,
    names: Sequence[str],
    *,
    any_: bool,
    out: TextIO,
) -> int:
    """Block until the agents ended: 0 all succeeded, 1 otherwise; unknown names raise.

    A task id waits for the task's final state, through its retries and fixers (and, after a
    ``--resume``, for this invocation's attempts, not an earlier one's end). Whatever had not
    ended when its orchestrator went away counts as ``lost``.
    """
    rundir = RunDir(responses)
    reader = JournalReader(rundir.journal)
    reader.poll()
    for name in names:
        progress_path(responses, name)
        locate(reader.state, name)

    def states() -> dict[str, str]:
        found = {}
        for name in names:
            final = locate(reader.state, name).final
            if final is not None:
                found[name] = final
        return found

    while True:
        reader.poll()
        done = states()
        if (any_ and done) or len(done) == len(names):
            break
        if not is_locked(rundir):
            reader.poll()
            done = {n: states().get(n, "lost") for n in names}
            break
        await asyncio.sleep(POLL)
    for name, state in done.items():
        out.write(f"{name}: {state}\n")
    return 0 if all(s == "succeeded" for s in done.values()) else 1
