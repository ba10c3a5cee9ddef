"""The guard (`orchestrator.process.guard`): when the orchestrator dies, whatever way, the
guard stops every process of each run still open, and leaves the others alone."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fakes import RUN_ID_VAR, fake, is_running, marked_pids, wait_until_gone, wait_until_no_marked

from orchestrator.control.leftovers import outlast_guard
from orchestrator.process.guard import GUARD
from orchestrator.process.procfs import process_start_time
from orchestrator.process.spawn import run_streaming
from orchestrator.records.journal import JournalState

ROOT = Path(__file__).resolve().parents[2]
HANG = 10.0
"""Gross bound that only detects hangs; the scenarios take a fraction of it."""


@pytest.fixture
async def run_ids() -> AsyncIterator[list[str]]:
    ids = [f"test-guard-{uuid.uuid4().hex}" for _ in range(2)]
    yield ids
    for run_id in ids:
        left = await wait_until_no_marked(run_id)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert left == [], f"processes of {run_id} outlived the scenario: {left}"


async def guarded(*args: str) -> tuple[asyncio.subprocess.Process, list[int]]:
    """The fake orchestrator, once its sleeps run: it and [guard pid, sleep pid, ...]."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = await asyncio.create_subprocess_exec(
        *fake("guarded", *args), env=env, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    async with asyncio.timeout(HANG):
        line = await proc.stdout.readline()
    words = line.split()
    assert words[:1] == [b"ready"], line
    return proc, [int(w) for w in words[1:]]


async def test_a_sigkilled_orchestrator_leaves_nothing_of_its_run(run_ids: list[str]) -> None:
    proc, (guard, sleep) = await guarded(run_ids[0])
    assert is_running(sleep)
    proc.kill()
    await proc.wait()
    assert await wait_until_gone(sleep), "it left its group and session: only the guard finds it"
    assert await wait_until_gone(guard), "the guard exits once it stopped the run"


async def test_the_guard_leaves_an_ended_run_alone(run_ids: list[str]) -> None:
    open_run, ended = run_ids
    proc, (guard, sleep, other) = await guarded(open_run, "--ended", ended)
    proc.kill()
    await proc.wait()
    assert await wait_until_gone(sleep)
    assert await wait_until_gone(guard)
    assert is_running(other), "a run told ended is no longer the guard's (a resumed run)"
    assert marked_pids(ended) == [other]
    os.kill(other, signal.SIGKILL)


async def test_a_killed_guard_is_replaced_and_told_the_runs_again(run_ids: list[str]) -> None:
    proc, (guard, sleep) = await guarded(run_ids[0], "--kill-guard-first")
    proc.kill()
    await proc.wait()
    assert await wait_until_gone(sleep), "the second guard stopped it"
    assert await wait_until_gone(guard)


async def test_a_spawn_for_a_run_needs_no_death_signal_of_its_own(run_ids: list[str]) -> None:
    env = dict(os.environ, **{RUN_ID_VAR: run_ids[0]})
    seen: list[str] = []
    code = await run_streaming(
        [sys.executable, "-c", "import os; print(os.getppid())"],
        cwd=ROOT,
        env=env,
        on_line=lambda stream, line: seen.append(line),
        pdeathsig="guard",
    )
    assert code == 0
    assert seen == [str(os.getpid())], "exec'd directly by us: no setpriv in between"
    assert GUARD.pid is not None
    assert is_running(GUARD.pid)


async def test_guard_refuses_a_spawn_of_no_run() -> None:
    env = {k: v for k, v in os.environ.items() if k != RUN_ID_VAR}
    with pytest.raises(OSError, match="no guard watches this spawn"):
        await run_streaming(
            ["true"], cwd=ROOT, env=env, on_line=lambda stream, line: None, pdeathsig="guard"
        )


@pytest.mark.parametrize("how", ["guard", "off"])
async def test_a_script_without_a_shebang_runs_with_sh(
    run_ids: list[str], tmp_path: Path, how: str
) -> None:
    script = tmp_path / "plain"
    script.write_text('echo "from sh: $1"\n')
    script.chmod(0o755)
    env = dict(os.environ, **{RUN_ID_VAR: run_ids[0]})
    seen: list[str] = []
    code = await run_streaming(
        [str(script), "x"],
        cwd=tmp_path,
        env=env,
        on_line=lambda stream, line: seen.append(line),
        pdeathsig=how,  # type: ignore[arg-type]
    )
    assert (code, seen) == (0, ["from sh: x"])


@pytest.mark.parametrize("run_id", ["", "a b", "a\nrun b", "a\tb", "a\x00b"])
def test_a_run_id_that_is_not_one_word_is_not_told_to_the_guard(run_id: str) -> None:
    assert GUARD.covers(run_id) is False  # the spawn gives its child its own death signal


def journal_with_guard(pid: int, pstart: int | None) -> JournalState:
    state = JournalState()
    state.run.update(run_id="r", state="running", guard={"pid": pid, "pstart": pstart})
    return state


async def test_a_resumed_run_waits_for_the_dead_orchestrators_guard() -> None:
    guard = await asyncio.create_subprocess_exec("sleep", "0.3")
    state = journal_with_guard(guard.pid, process_start_time(guard.pid))
    waiting = asyncio.ensure_future(asyncio.to_thread(outlast_guard, state, patience=HANG))
    await guard.wait()  # reaped here: then it is gone for the wait too
    async with asyncio.timeout(HANG):
        assert await waiting is True


async def test_a_guard_that_does_not_exit_is_waited_for_only_so_long() -> None:
    guard = await asyncio.create_subprocess_exec("sleep", "30")
    try:
        state = journal_with_guard(guard.pid, process_start_time(guard.pid))
        assert await asyncio.to_thread(outlast_guard, state, patience=0.1) is False
    finally:
        guard.kill()
        await guard.wait()


def test_a_recycled_pid_or_no_guard_is_not_waited_for() -> None:
    me = os.getpid()
    assert outlast_guard(journal_with_guard(me, (process_start_time(me) or 0) + 1)) is True
    assert outlast_guard(JournalState()) is True
