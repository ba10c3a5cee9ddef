"""Orphan-proofing: adopted descendants are reaped, our own children never are."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import fake, marked_pids

from orchestrator.process import orphans, spawn
from orchestrator.process.capture import run_captured
from orchestrator.process.procfs import stat_fields


async def reap_flat_out(stop: asyncio.Event) -> None:
    while not stop.is_set():
        orphans.reap_orphans()
        await asyncio.sleep(0)


async def test_reaping_as_fast_as_possible_never_takes_a_child_we_spawned(
    tmp_path: Path,
) -> None:
    """The reaper runs on the loop's thread; a spawn under way pauses it, so asyncio still
    gets every exit code of its own children (a stolen one would read as 255)."""
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(reap_flat_out(stop))
        codes = [
            await spawn.run_streaming(
                ["/bin/true"],
                cwd=tmp_path,
                env=dict(os.environ),
                on_line=lambda _stream, _line: None,
            )
            for _ in range(100)
        ]
        stop.set()
    assert codes == [0] * 100


@pytest.fixture
def every_cpu_busy() -> Iterator[None]:
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(2 * (os.cpu_count() or 2))
    ]
    yield
    for hog in hogs:
        hog.kill()
        hog.wait()


async def test_reaping_flat_out_never_takes_a_helper_command_asyncio_waits_for(
    every_cpu_busy: None,
) -> None:
    """Git plumbing runs through asyncio's subprocesses, whose pid is known only after a
    yield: taken by the reaper, asyncio reads the exit code as 255 (a run of 500 tasks lost
    3 of 5 times to "git worktree failed (255)"). Twenty at a time, 200 in all, with every
    CPU busy: asyncio's waiter threads are slow to wake and reap, so the zombies wait, as
    they did in that busy run (the old code failed here 3 runs of 3)."""
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(reap_flat_out(stop))
        codes = []
        for _ in range(10):
            done = await asyncio.gather(*(run_captured(["/bin/true"]) for _ in range(20)))
            codes += [d.returncode for d in done]
        stop.set()
    assert codes == [0] * 200
    assert not orphans.SPAWNED, "each was forgotten once asyncio had reaped it"


async def test_an_adopted_double_forked_descendant_is_reaped(tmp_path: Path) -> None:
    script = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(0.2)\n"
        "        os._exit(0)\n"
        "    os._exit(0)\n"
        "os.wait()\n"
        "print(os.getpid())\n"
    )
    assert orphans.set_child_subreaper()
    try:
        code = await spawn.run_streaming(
            [sys.executable, "-c", script],
            cwd=tmp_path,
            env=dict(os.environ),
            on_line=lambda _stream, _line: None,
            drain=0.5,
        )
        assert code == 0
        reaped: list[int] = []
        for _ in range(200):
            reaped += orphans.reap_orphans()
            if reaped:
                break
            await asyncio.sleep(0.02)
        assert len(reaped) == 1
    finally:
        import ctypes

        ctypes.CDLL(None).prctl(36, 0, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER off for the suite


@pytest.mark.timeout(60)
def test_one_sweep_ends_a_process_that_keeps_forking_and_exiting(every_cpu_busy: None) -> None:
    """Unconfined, a fork-and-exit loop (a new pid every 20 ms, in a session of its own) is
    ended by one sweep, every time: each process is stopped the moment the scan finds it,
    then its whole group killed at once. Pid by pid, the adversarial pass saw it outlive
    the sweep in 15 of 25 tries (on a busy machine: every CPU is, here)."""
    for _ in range(10):
        run_id = f"hopper-{uuid.uuid4().hex[:8]}"
        nonce = f"7200.{random.randrange(10**9):09d}"
        env = {**os.environ, "ORCHESTRATOR_RUN_ID": run_id}
        starter = subprocess.Popen(
            fake("escapes", nonce, "hopper", "--then", "exit"),
            env=env, stdout=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        assert starter.wait(timeout=30) == 0
        deadline = time.monotonic() + 30
        while not marked_pids(run_id):
            assert time.monotonic() < deadline, "the hopper never ran"
            time.sleep(0.01)  # noqa: TID251 - a sync test
        orphans.sweep_run(run_id)
        deadline = time.monotonic() + 2
        while left := marked_pids(run_id):
            assert time.monotonic() < deadline, f"the hopper outlived the sweep: {left}"
            time.sleep(0.01)  # noqa: TID251 - a sync test


def _marked_sleeper(run_id: str, agent: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ORCHESTRATOR_RUN_ID": run_id, "ORCHESTRATOR_AGENT_ID": agent}
    code = "import time; time.sleep(60)"
    return subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)


async def test_sweeps_asked_for_together_share_one_scan_and_find_each_agents_leftovers() -> None:
    """`sweep_agent`: agents stopped in the same turn (a `cancel --all`) get one sweep, which
    kills what each left behind and nothing of an agent that did not ask."""
    run_id = f"sweeps-{uuid.uuid4().hex[:8]}"
    left = {agent: _marked_sleeper(run_id, agent) for agent in ("a", "b", "c", "keep")}
    try:
        async with asyncio.timeout(30):
            while len(marked_pids(run_id)) < len(left):
                await asyncio.sleep(0.01)
            swept = await asyncio.gather(*(orphans.sweep_agent(run_id, a) for a in "abc"))
            killed = {left[a].pid for a in "abc"}
            assert [sorted(s) for s in swept] == [sorted(killed)] * 3  # one scan: one outcome
            for agent, proc in left.items():
                if agent != "keep":
                    assert await asyncio.to_thread(proc.wait) == -9
            assert left["keep"].poll() is None
            # Later: a sweep of its own, which finds only what it asks for.
            assert await orphans.sweep_agent(run_id, "keep") == [left["keep"].pid]
    finally:
        for proc in left.values():
            proc.kill()
        await asyncio.to_thread(lambda: [proc.wait() for proc in left.values()])


def test_the_reaper_reads_our_children_not_every_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the kernel lists a process's children, the reaper looks at those alone: a look
    at every process on the machine held the loop 10-20 ms each time something exited."""
    if orphans._children(os.getpid()) is None:
        pytest.skip("this kernel keeps no children file (CONFIG_PROC_CHILDREN)")
    kids = [subprocess.Popen(["sleep", "5"]) for _ in range(3)]
    try:
        assert {k.pid for k in kids} <= set(orphans._children(os.getpid()) or [])
    finally:
        for k in kids:
            k.kill()
            k.wait()

    def everyone() -> list[int]:
        raise AssertionError("scanned every process")

    monkeypatch.setattr(orphans, "all_pids", everyone)
    zombie = subprocess.Popen(["true"])
    _wait_for_zombie(zombie.pid)
    assert zombie.pid in orphans.reap_orphans()
    zombie.returncode = 0  # reaped here: Popen must not wait for it again


def test_without_a_children_file_the_reaper_looks_at_every_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(orphans, "_children", lambda me: None)
    zombie = subprocess.Popen(["true"])
    _wait_for_zombie(zombie.pid)
    assert zombie.pid in orphans.reap_orphans()
    zombie.returncode = 0


def _wait_for_zombie(pid: int) -> None:
    """Until ``pid`` has exited, leaving it a zombie (not reaped)."""
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    assert stat_fields(pid)[0] == b"Z"
