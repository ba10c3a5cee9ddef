"""Where an attempt runs and what becomes of its work: the engine's side of `isolation`.

The scheduler asks for a place before an agent starts and hands the result back after it
ended; a checkout that cannot be made or sealed is the attempt's failure, never the run's
crash, and never a silent fallback to the shared directory.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

from orchestrator.engine.state import AgentRecord, Spawn
from orchestrator.errors import RunError
from orchestrator.events import AgentState
from orchestrator.isolation.checkouts import Place, Workspaces


async def lease(
    places: Workspaces, rec: AgentRecord, spawn: Spawn, made: set[Path]
) -> Place | tuple[AgentState, str]:
    """A place for this attempt; else how the attempt ends without running: ``failed`` (no
    checkout could be made), ``succeeded`` (its task's work landed before a crash, or a
    person's resolution of its conflict just landed) or ``escalated`` (that resolution is
    not finished: conflict markers remain). ``made``: the directories made (or found) so far
    in this run; a thread makes only the others (not one thread hop per agent)."""
    place: Place | None = None
    try:
        place = await places.lease(rec.id, spawn.role, spawn.task.id)
        if place.done is None and place.held is None and place.path not in made:
            await asyncio.to_thread(place.path.mkdir, parents=True, exist_ok=True)
            made.add(place.path)
    except asyncio.CancelledError:
        stopped = _stopped(rec)
        if place is not None and place.done is None and place.held is None:
            await hand_back(places, rec, spawn, place, *stopped)  # give back what it was given
        return stopped
    except (RunError, OSError) as exc:
        return "failed", f"no checkout for the agent: {str(exc).removeprefix('error: ')}"
    if place.done is not None:
        rec.changes = place.changes
        return "succeeded", place.done
    if place.held is not None:
        return "escalated", place.held
    return place


async def hand_back(
    places: Workspaces, rec: AgentRecord, spawn: Spawn, place: Place, state: AgentState,
    reason: str,
) -> tuple[AgentState, str]:  # fmt: skip
    """Seal (and for a success, land) the attempt's work; the state it really ended in."""
    try:
        back = await places.hand_back(
            place, state, reason, summary=reason if state == "succeeded" else "", kind=rec.kind,
            prompt=spawn.task.prompt or spawn.prompt,
        )  # fmt: skip
    except asyncio.CancelledError:
        return _stopped(rec)  # its checkout stays locked: the next lease seals what is in it
    except (RunError, OSError) as exc:
        return "failed", f"its work could not be sealed or landed: {exc}"
    rec.changes = back.changes
    return cast(AgentState, back.state), back.reason


def _stopped(rec: AgentRecord) -> tuple[AgentState, str]:
    """A stop asked for while the checkout was being made or sealed; other cancellations
    (the run torn down) propagate."""
    me = asyncio.current_task()
    if rec.stop is None or me is None:
        raise asyncio.CancelledError
    while me.cancelling():
        me.uncancel()
    return rec.stop
