"""Leftovers of an orchestrator that is gone: what its journal says still runs, stopped without it.

`status`, `cancel` and a starting run use it when no orchestrator answers on the control
socket. Each process is checked against its recorded start time or held by a pidfd, so a
recycled pid is never signalled. Blocking: for short-lived CLI commands and worker threads.
"""

from __future__ import annotations

import signal
import time

from orchestrator.process.group import kill_group
from orchestrator.process.orphans import sweep_run
from orchestrator.process.procfs import (
    Marked,
    any_alive,
    close_marked,
    is_live,
    kill_marked,
    open_marked,
    process_start_time,
    signal_marked,
)
from orchestrator.records.journal import JournalState, load
from orchestrator.records.rundir import RunDir, held_if_free

LEFTOVER_GRACE = 0.5
"""Seconds `status` gives leftovers of a killed orchestrator between SIGTERM and SIGKILL."""


def stop_leftovers(
    rundir: RunDir, agent_ids: list[str] | None, *, grace: float, tree: bool = False
) -> list[str] | None:
    """`stop_recorded` for a run whose orchestrator is gone; None when a run holds the lock.

    The lock is held meanwhile, so a ``run --resume`` (same run id) cannot start agents
    while the run id is being swept. A run the journal says is over has nothing left.
    """
    if not rundir.journal.exists():
        return []  # no run was ever recorded here
    with held_if_free(rundir) as held:
        if not held:
            return None
        journal = load(rundir.journal)
        if journal.run.get("state") != "running":
            return []  # it ended (or a new run came and went) since the caller looked
        return stop_recorded(journal, agent_ids, grace=grace, tree=tree)


def _alive_as_recorded(pid: int, pstart: object) -> bool:
    """True when ``pid`` is still the very process the journal recorded (not a recycled pid)."""
    return isinstance(pstart, int) and process_start_time(pid) == pstart


def outlast_guard(journal: JournalState, *, patience: float = 5.0) -> bool:
    """Wait (up to ``patience`` seconds) until the guard of the journal's dead orchestrator
    (`orchestrator.process.guard`, recorded in the run's record) has exited: it exits once
    it has stopped the run's processes, and a run resumed under the same id must not start
    an agent while that sweep could still take it for a leftover. True once it is gone (or
    none was recorded). Blocking: call it through a thread."""
    guard = journal.run.get("guard")
    if not isinstance(guard, dict):
        return True
    pid, pstart = guard.get("pid"), guard.get("pstart")
    if not isinstance(pid, int) or pid <= 1:
        return True
    deadline = time.monotonic() + patience
    while _alive_as_recorded(pid, pstart) and is_live(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)  # noqa: TID251 - runs in a worker thread, never on the event loop
    return True


def stop_recorded(
    journal: JournalState, agent_ids: list[str] | None, *, grace: float, tree: bool = False
) -> list[str]:
    """Stop, without an orchestrator, what the journal says is still running; the ids stopped.

    Blocking (SIGTERM, up to ``grace`` seconds, SIGKILL); for CLI use only. An agent's
    processes are its recorded group, when the leader is still the process recorded (start
    time checked), and every process whose environment carries the run's id and the agent's
    id: that finds the rest of a group whose leader died with the orchestrator, and
    descendants that left the group. Each is held by a pidfd, so no recycled pid is signalled.
    With no ids, every running agent is stopped and every process of the run is swept.
    """
    run_id = journal.run.get("run_id")
    running = {aid for aid, rec in journal.agents.items() if rec.get("state") == "running"}
    if agent_ids is None:
        wanted = running
    else:
        wanted = _with_descendants(journal, agent_ids) if tree else set(agent_ids)
        wanted &= running
    groups: dict[int, str] = {}
    for agent_id in wanted:
        rec = journal.agents[agent_id]
        pgid = rec.get("pgid") or rec.get("pid")
        if isinstance(pgid, int) and pgid > 1 and _alive_as_recorded(pgid, rec.get("pstart")):
            groups[pgid] = agent_id  # a zombie leader still holds its pid: killpg is safe
    marked: list[Marked] = []
    if isinstance(run_id, str) and run_id and (agent_ids is None or wanted):
        marked = open_marked(run_id, None if agent_ids is None else wanted)
    stopped = {a for pgid, a in groups.items() if is_live(pgid)} | {m.agent_id for m in marked}
    try:
        for pgid in groups:
            kill_group(pgid, signal.SIGTERM)
        signal_marked(marked, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not any(is_live(p) for p in groups) and not any_alive(marked):
                break
            time.sleep(0.02)  # noqa: TID251 - a short-lived CLI process, not event-loop code
        for pgid in groups:
            kill_group(pgid, signal.SIGKILL)
        kill_marked(marked)
    finally:
        close_marked(marked)
    if agent_ids is None and isinstance(run_id, str) and run_id:
        sweep_run(run_id)
    return sorted(stopped)


def _with_descendants(journal: JournalState, agent_ids: list[str]) -> set[str]:
    """The agents and, through the journal's ``parent`` links, every agent they spawned."""
    out = set(agent_ids)
    grew = True
    while grew:
        more = {aid for aid, rec in journal.agents.items() if rec.get("parent") in out} - out
        out |= more
        grew = bool(more)
    return out
