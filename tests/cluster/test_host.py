"""A node's host without Ray (the class the actor wraps), with real git and processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from orchestrator.cluster.host import NodeHost
from orchestrator.cluster.wire import AttemptSpec
from orchestrator.cluster.workspace import Snapshots
from orchestrator.plan.model import Plan, Task

pytestmark = pytest.mark.timeout(60)


async def test_a_stop_that_comes_while_the_checkout_is_made_keeps_the_agent_from_starting(
    tmp_path: Path,
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "app.py").write_text("print('hi')\n")
    marker = tmp_path / "ran"
    task = Task("t", agent="command", command=("sh", "-c", f"touch {marker}; sleep 30"))
    plan = Plan("p", (task,), workspace=ws)
    snaps = Snapshots(ws)
    await snaps.open()
    base, _ = await snaps.base(ws)
    data = await snaps.bundle(base)
    host = NodeHost("run-stop-race", "node-a")
    await host.ready(plan, "off")
    asked, release = asyncio.Event(), asyncio.Event()

    async def bundle() -> bytes:  # the driver's object store, slow to answer
        asked.set()
        await release.wait()
        return data

    spec = AttemptSpec(
        agent_id="t", run_id="run-stop-race", kind="command", task=task, attempt=1, prompt="",
        script=(), env={}, grace=0.2, depth=0, parent=None, notes=(), model=None, base=base,
    )  # fmt: skip
    try:
        starting = asyncio.create_task(host.start(spec, [bundle()]))
        await asyncio.wait_for(asked.wait(), 30)
        await host.stop("t", False)  # the driver was cancelled while start was in flight
        release.set()
        await starting
        batches = await host.poll(0)
        assert batches["t"].done
        assert batches["t"].change is not None
        assert not marker.exists(), "the stopped attempt's command ran"
        assert "t" not in host._attempts  # finished and forgotten
    finally:
        await host.shutdown()
        snaps.close()


async def test_a_stop_that_comes_before_the_attempt_took_its_first_step_still_ends_it(
    tmp_path: Path,
) -> None:
    """A stop queued on the actor's loop ahead of the attempt's first step cancels a task
    whose code never ran: its end is still reported (no driver waits for it forever), and
    the agent's coroutine is closed, never left unawaited."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "app.py").write_text("print('hi')\n")
    marker = tmp_path / "ran"
    task = Task("t", agent="command", command=("sh", "-c", f"touch {marker}; sleep 30"))
    plan = Plan("p", (task,), workspace=ws)
    snaps = Snapshots(ws)
    await snaps.open()
    base, _ = await snaps.base(ws)
    data = await snaps.bundle(base)
    host = NodeHost("run-first-step", "node-a")
    await host.ready(plan, "off")

    async def bundle() -> bytes:
        return data

    spec = AttemptSpec(
        agent_id="t", run_id="run-first-step", kind="command", task=task, attempt=1, prompt="",
        script=(), env={}, grace=0.2, depth=0, parent=None, notes=(), model=None, base=base,
    )  # fmt: skip
    try:
        await host.start(spec, [bundle()])  # the attempt's task exists; its code has not run
        await host.stop("t", False)  # cancels it before its first step: nothing awaits between
        async with asyncio.timeout(10):  # without the fix: no news until POLL_WAIT, then none
            batches = await host.poll(0)
        assert batches["t"].done
        assert not marker.exists(), "the stopped attempt's command ran"
    finally:
        await host.shutdown()
        snaps.close()
