"""A sandboxed spawn whose bubblewrap dies while the cgroup join is in flight.

The join (`Sandboxed.join`, on a thread) reads the sandbox's first pid, writes it into the
cgroups, then releases the sandbox through the block pipe. A stop that comes in between kills
bubblewrap: the release meets a broken pipe, and the join's outcome arrives after the spawn
stopped listening for it. The race is injected, not hoped for: the agent's cgroup here is a
set of directories whose ``cgroup.procs`` is a plain file (the test sees the join get there),
then a FIFO (the join waits there until the test opens it), then, where asked, a directory (the
write fails: a join that cannot be done). Real bubblewrap, real processes.

Seen in CI as "a traceback" in the stop soak (seeds 1041, 1059, 1082, 1088, 1089, 1121) and
the random-signal soak (seeds 101, 126): ``Future exception was never retrieved ...
BrokenPipeError`` from the join.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from orchestrator.plan.model import Limits, Plan, Task
from orchestrator.process import spawn
from orchestrator.process.group import kill_group
from orchestrator.process.procfs import group_has_live_member
from orchestrator.sandbox.bwrap import Sandboxed
from orchestrator.sandbox.cgroups import AgentCgroup
from orchestrator.sandbox.confinement import Confinement
from orchestrator.sandbox.decision import decide
from orchestrator.sandbox.support import probe

SUPPORT = probe()
pytestmark = [
    pytest.mark.skipif(not SUPPORT.can_sandbox, reason="cannot make a sandbox here"),
    pytest.mark.skipif(SUPPORT.cgroups is None, reason=SUPPORT.limits_note),
    pytest.mark.timeout(60),
]


def confinement(tmp_path: Path, workspace: Path) -> Confinement:
    """A sandbox with a memory limit: its spawns join a cgroup."""
    plan = Plan("p", (Task("a", agent="command", command=("true",)),), workspace=workspace,
                limits=Limits(memory=512 * 2**20))  # fmt: skip
    decision = decide(plan, SUPPORT, responses=tmp_path / "responses", scratch=tmp_path / "scratch")
    assert decision.confinement is not None
    return decision.confinement


class Gate:
    """The join's way through the cgroups, held by the test."""

    def __init__(self, root: Path, *, fail: bool) -> None:
        self.seen = root / "seen"
        self.held = root / "held"
        dirs = [self.seen, self.held]
        for d in dirs:
            d.mkdir(parents=True)
        os.mkfifo(self.held / "cgroup.procs")
        if fail:
            refused = root / "refused"
            (refused / "cgroup.procs").mkdir(parents=True)  # writing it: IsADirectoryError
            dirs.append(refused)
        self.cgroup = AgentCgroup(tuple(dirs))

    async def reached(self) -> int:
        """The join has the sandbox's pid and waits at the FIFO (or is about to): bubblewrap's
        pid (the spawn's process, whose child the sandbox's init is). The spawn reports its
        group only once the join is done."""
        procs = self.seen / "cgroup.procs"
        while not (procs.exists() and procs.read_text()):
            await asyncio.sleep(0.01)
        init = int(procs.read_text())
        stat = await asyncio.to_thread(Path(f"/proc/{init}/stat").read_text)
        return int(stat.rsplit(")", 1)[1].split()[1])  # its parent

    def open(self) -> None:
        """Let the join's FIFO write through (it blocks until a reader comes)."""
        fd = os.open(self.held / "cgroup.procs", os.O_RDONLY)
        try:
            while os.read(fd, 64):
                pass
        finally:
            os.close(fd)


def gated(monkeypatch: pytest.MonkeyPatch, gate: Gate) -> None:
    """Every sandboxed spawn of the test joins through ``gate`` (its real cgroup removed)."""
    real = spawn.confine

    def confine(conf: Confinement, argv: Any, **kw: Any) -> Sandboxed:
        made = real(conf, argv, **kw)
        assert made.cgroup is not None, "a cgroup to join"
        assert made.joins
        made.cgroup.remove()
        made.cgroup = gate.cgroup
        return made

    monkeypatch.setattr(spawn, "confine", confine)


def start(conf: Confinement, workspace: Path, pids: list[int]) -> asyncio.Task[int]:
    async def spawned() -> int:
        return await spawn.run_streaming(
            ["/bin/sh", "-c", "echo ran"], cwd=workspace, env=dict(os.environ),
            on_line=lambda s, line: None, on_start=pids.append, sandbox=conf, grace=0.2,
        )  # fmt: skip

    return asyncio.create_task(spawned())


async def bubblewrap_gone(pgid: int) -> None:
    while group_has_live_member(pgid):
        await asyncio.sleep(0.01)


async def test_bubblewrap_killed_while_the_join_waits_ends_the_spawn_with_its_code(
    tmp_path: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL to the group (a forced stop) during the join: the release meets a broken pipe,
    and the spawn still ends as a killed spawn does, with no error of its own."""
    conf = confinement(tmp_path, workspace)
    gate = Gate(tmp_path / "gate", fail=False)
    gated(monkeypatch, gate)
    pids: list[int] = []
    task = start(conf, workspace, pids)
    bubblewrap = await asyncio.wait_for(gate.reached(), 30)
    kill_group(bubblewrap, signal.SIGKILL)
    await asyncio.wait_for(bubblewrap_gone(bubblewrap), 30)
    await asyncio.to_thread(gate.open)
    code = await asyncio.wait_for(task, 30)  # without the fix: BrokenPipeError
    assert code == -signal.SIGKILL


@pytest.mark.parametrize("fail", [False, True], ids=["released-into-a-dead-sandbox", "refused"])
async def test_a_stop_while_the_join_waits_leaves_no_unretrieved_error(
    tmp_path: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch, fail: bool
) -> None:
    """The spawn is cancelled (a stop) during the join, which then ends in an error: the
    spawn waits for it and takes it, so asyncio never prints "exception was never
    retrieved" with a traceback when the future is collected."""
    conf = confinement(tmp_path, workspace)
    gate = Gate(tmp_path / "gate", fail=fail)
    gated(monkeypatch, gate)
    unretrieved: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: unretrieved.append(context))
    pids: list[int] = []
    try:
        task = start(conf, workspace, pids)
        bubblewrap = await asyncio.wait_for(gate.reached(), 30)
        task.cancel()
        await asyncio.wait_for(bubblewrap_gone(bubblewrap), 30)  # the stop killed it
        await asyncio.to_thread(gate.open)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)
        del task
        for _ in range(3):
            gc.collect()
            await asyncio.sleep(0)
        assert not unretrieved, unretrieved
    finally:
        loop.set_exception_handler(None)
