"""An attempt's watch and the run's clock of watch timers (`orchestrator.engine.attempt`)."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest

from orchestrator.engine.attempt import GRAIN, Clock, Watch
from orchestrator.engine.state import AgentRecord
from orchestrator.events import AgentState
from orchestrator.plan.model import Task


class Probe:
    """A stand-in for a watch: records the loop time it was called at."""

    def __init__(self) -> None:
        self.called: list[float] = []
        self.due = asyncio.get_running_loop().create_future()

    def __call__(self) -> None:
        self.called.append(asyncio.get_running_loop().time())
        if not self.due.done():
            self.due.set_result(None)


async def test_watches_due_within_one_grain_share_one_loop_timer() -> None:
    """A thousand agents started in the same few milliseconds: one loop timer for their
    watches, not a thousand; cancelled once the last of them has left."""
    loop = asyncio.get_running_loop()

    def timers() -> int:
        return sum(not h.cancelled() for h in loop._scheduled)  # type: ignore[attr-defined]

    clock = Clock()
    at = (math.floor((loop.time() + 60) / GRAIN) + 0.25) * GRAIN  # a minute on, mid-bucket
    before = timers()
    checks = [Probe() for _ in range(1000)]
    slots = {clock.add(at + i * GRAIN / 2000, c) for i, c in enumerate(checks)}
    assert len(slots) == 1
    assert len(clock) == 1
    assert timers() == before + 1
    (slot,) = slots
    for check in checks:
        clock.remove(slot, check)
    assert len(clock) == 0
    assert timers() == before


async def test_a_watch_is_called_once_its_time_has_come_never_before() -> None:
    loop = asyncio.get_running_loop()
    clock = Clock()
    whens = [loop.time() + d for d in (0.0, 0.003, 0.011, 0.02, 0.05)]
    checks = [Probe() for _ in whens]
    for when, check in zip(whens, checks, strict=True):
        clock.add(when, check)
    async with asyncio.timeout(10):
        await asyncio.gather(*(c.due for c in checks))
    for when, check in zip(whens, checks, strict=True):
        assert len(check.called) == 1
        assert check.called[0] >= when
    assert len(clock) == 0


async def test_a_removed_watch_is_not_called_and_the_rest_of_its_bucket_is() -> None:
    loop = asyncio.get_running_loop()
    clock = Clock()
    gone, kept = Probe(), Probe()
    when = loop.time() + 0.02
    slot = clock.add(when, gone)
    assert clock.add(when, kept) == slot
    clock.remove(slot, gone)
    async with asyncio.timeout(10):
        await kept.due
    await asyncio.sleep(GRAIN * 2)
    assert gone.called == []
    assert len(kept.called) == 1
    clock.remove(slot, kept)  # due already: nothing to remove, and no error


async def test_a_check_that_raises_is_reported_and_the_others_of_its_bucket_still_run() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        clock = Clock()
        when = loop.time() + 0.01

        def broken() -> None:
            raise RuntimeError("a bug in a check")

        after = Probe()
        clock.add(when, broken)
        clock.add(when, after)
        async with asyncio.timeout(10):
            await after.due
        await asyncio.sleep(0)
        assert [type(c.get("exception")) for c in reported] == [RuntimeError]
    finally:
        loop.set_exception_handler(None)


async def test_a_time_that_never_comes_takes_no_timer() -> None:
    clock = Clock()
    slot = clock.add(math.inf, Probe())
    assert len(clock) == 0
    clock.remove(slot, Probe())


# --- the watch ---------------------------------------------------------------------------------


def _record() -> AgentRecord:
    rec = AgentRecord("a", "a", "scripted", "task", 1, 0, None, state="running")
    rec.last_event = time.monotonic()
    return rec


async def test_a_watch_stops_its_agent_at_its_timeout_with_the_reason() -> None:
    stopped: list[tuple[str, AgentState, str]] = []
    done = asyncio.get_running_loop().create_future()

    def stop(agent_id: str, state: AgentState, reason: str) -> bool:
        stopped.append((agent_id, state, reason))
        done.set_result(None)
        return True

    task = Task("a", agent="scripted", timeout=0.05, stall_timeout=60)
    with Watch(_record(), task, stop, Clock()):
        async with asyncio.timeout(10):
            await done
    assert stopped == [("a", "timed_out", "timed out after 0.05s")]


@pytest.mark.parametrize("late", [False, True], ids=["before-due", "due-but-not-yet-run"])
async def test_a_watch_that_has_left_never_stops_its_agent(late: bool) -> None:
    """An agent that ends just as its time comes: once its watch has left, a check already
    due (called soon, not yet run) does nothing."""
    stopped: list[str] = []
    clock = Clock()
    task = Task("a", agent="scripted", timeout=0.02, stall_timeout=60)

    def stop(agent_id: str, state: AgentState, reason: str) -> bool:
        stopped.append(agent_id)
        return True

    with Watch(_record(), task, stop, clock) as w:
        if late:
            clock._due(w.slot)  # its bucket came due: its check is called soon, not yet run
    await asyncio.sleep(0.1)  # past its timeout, and the check has run
    assert stopped == []
    assert len(clock) == 0
