"""Scratch directories: a killed run's are pruned at the next start, a live run's never."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from clirun import Fleet, poll, quiet_env

from orchestrator.sandbox.scratch import (
    OWNER,
    SpareTmps,
    own_dir,
    prune_dead,
    start_time,
)
from orchestrator.sandbox.support import probe

pytestmark = pytest.mark.timeout(60)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_prunes_dead_owners_and_keeps_live_ones(tmp_path: Path) -> None:
    parent = tmp_path / "orchestrator-sandbox-x"
    mine = parent / str(os.getpid())
    own_dir(mine)
    assert (mine / OWNER).read_text() == start_time(os.getpid()), "the owner is recorded"
    dead = parent / str(dead_pid())
    (dead / "tmp-1" / "deep").mkdir(parents=True)
    (dead / "tmp-1" / "deep" / "f").write_text("left by a SIGKILLed run")
    with subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE) as live:
        try:
            alive = parent / str(live.pid)
            alive.mkdir()
            (alive / OWNER).write_text(start_time(live.pid) or "?")
            unrecorded = parent / str(os.getppid())
            unrecorded.mkdir()
            other = tmp_path / "recycled-check"
            other.mkdir()
            link = parent / "12345678"
            link.symlink_to(other)
            stray = parent / "not-a-pid"
            stray.mkdir()

            removed = prune_dead(mine)

            assert removed == [dead]
            for kept in (mine, alive, unrecorded, link, stray):
                assert os.path.lexists(kept), kept
            assert other.exists(), "a link is never followed"

            (alive / OWNER).write_text("1")  # as if its pid now belonged to a later process
            assert prune_dead(mine) == [alive]
        finally:
            live.communicate(b"\n")


def test_only_a_directory_of_ours_is_looked_into(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / str(dead_pid())).mkdir(parents=True)
    parent = tmp_path / "orchestrator-sandbox-x"
    parent.symlink_to(elsewhere)
    assert prune_dead(parent / str(os.getpid())) == []
    assert len(list(elsewhere.iterdir())) == 1


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.close()


@pytest.mark.skipif(not probe().can_sandbox, reason="this machine cannot make a sandbox (bwrap)")
def test_a_run_prunes_what_a_killed_run_left(fleet: Fleet, tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = quiet_env(TMPDIR=str(tmp))
    hold = {"id": "a", "agent": "command", "command": ["sh", "-c", "echo up; sleep 60"]}
    fleet.plan(hold, sandbox="best-effort")
    first = fleet.start("run", "plan.yaml", "--no-live", env=env)
    parent = tmp / f"orchestrator-sandbox-{os.getuid()}"
    left = parent / str(first.pid)
    poll(lambda: any(left.glob("tmp-*")), what="the agent's private temp directory")
    first.kill()
    first.wait()
    assert left.exists(), "a SIGKILLed run cannot clean up after itself"

    fleet.plan({"id": "b", "agent": "command", "command": ["true"]}, sandbox="best-effort")
    second = fleet.start("run", "plan.yaml", "--no-live", env=env)
    try:
        poll(lambda: not left.exists(), what="the dead run's scratch directory to go")
    finally:
        fleet.finish(second, timeout=30)


def test_an_empty_temp_dir_is_handed_out_again_and_a_used_one_never(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    own_dir(scratch)
    spares = SpareTmps()
    first = spares.take(scratch)
    assert spares.keep(first), "empty, ours, 0700: kept"
    assert spares.take(scratch) == first
    assert spares.take(scratch) != first, "handed out once"
    (first / "f").write_text("left by an agent")
    assert not spares.keep(first), "not empty"
    (first / "f").unlink()
    first.chmod(0o755)
    assert not spares.keep(first), "not as a fresh one is made"
    first.chmod(0o700)
    assert spares.keep(first)
    first.rmdir()  # removed meanwhile: never handed out
    assert spares.take(scratch) != first
    second = spares.take(scratch)
    assert spares.keep(second)
    assert SpareTmps().take(scratch) != second, "another run's: not shared"
    assert pickle.loads(pickle.dumps(spares)).take(scratch) != second, "not to another machine"
    spares.forget()  # a run's end: its scratch directory is removed next
    assert spares.take(scratch) != second
