"""Stopping a group when the stop is decided outside the agent's task: one SIGTERM, at once;
and a group already gone is known to be so without waiting."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from pathlib import Path

import pytest
from fakes import RUN_ID_VAR, fake, is_running, wait_until_gone, wait_until_no_marked

from orchestrator.process.group import stop_group, stop_recorded, terminate_recorded
from orchestrator.process.procfs import process_start_time
from orchestrator.process.spawn import run_streaming

HANG = 10.0
"""Gross bound that only detects hangs."""


class Lines(list[tuple[str, str]]):
    """An ``on_line`` that lets a test wait for a line."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def __call__(self, stream: str, line: str) -> None:
        self.append((stream, line))
        self.changed.set()

    async def wait_for(self, line: str) -> None:
        async with asyncio.timeout(HANG):
            while not any(got == line for _, got in self):
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def marked_env() -> AsyncIterator[dict[str, str]]:
    run_id = f"test-group-{uuid.uuid4().hex}"
    yield dict(os.environ, **{RUN_ID_VAR: run_id})
    assert await wait_until_no_marked(run_id) == []


async def start(
    program: str, env: dict[str, str], lines: Lines, grace: float
) -> tuple[asyncio.Task[int], int]:
    pids: list[int] = []
    task = asyncio.create_task(
        run_streaming(fake(program), cwd=Path.cwd(), env=env, on_line=lines,
                      on_start=pids.append, grace=grace)
    )  # fmt: skip
    await lines.wait_for("ready")
    return task, pids[0]


async def test_a_sigterm_sent_ahead_is_the_only_one_and_the_grace_then_sigkill_follow(
    marked_env: dict[str, str],
) -> None:
    """A cancel request signals the group in its own turn of the loop; the agent's stop that
    follows sends no second SIGTERM (which some programs read as "now") and still ends a
    group that ignores it with SIGKILL."""
    lines = Lines()
    task, pid = await start("ignore_term", marked_env, lines, grace=0.3)
    pstart = process_start_time(pid)
    assert terminate_recorded(pid, pstart)
    await lines.wait_for("term ignored")
    assert terminate_recorded(pid, pstart)  # idempotent: sent already, not again
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(HANG):
            await task
    assert lines.count(("stderr", "term ignored")) == 1
    assert await wait_until_gone(pid)


async def test_a_polite_group_ends_on_the_sigterm_sent_ahead(marked_env: dict[str, str]) -> None:
    lines = Lines()
    task, pid = await start("sleeper", marked_env, lines, grace=HANG)
    assert stop_recorded(pid, process_start_time(pid), force=False)
    async with asyncio.timeout(HANG):
        assert await task == -signal.SIGTERM  # it ended by itself, before any cancel


async def test_a_process_that_is_not_the_one_recorded_is_never_signalled(
    marked_env: dict[str, str],
) -> None:
    lines = Lines()
    task, pid = await start("sleeper", marked_env, lines, grace=HANG)
    pstart = process_start_time(pid)
    assert pstart is not None
    assert not terminate_recorded(pid, pstart + 1)  # another start time: a recycled pid
    assert not terminate_recorded(None, pstart)
    assert is_running(pid)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(HANG):
            await task
    assert not terminate_recorded(pid, pstart)  # gone


# --- a group already gone ---------------------------------------------------------------------


@dataclass
class Exited:
    """A process whose exit is known (`ProcessLike`)."""

    pid: int
    returncode: int | None

    async def wait(self) -> int:
        raise AssertionError("an exited process is not waited for")


def spawn_session(env: dict[str, str], argv: list[str] | None = None) -> int:
    """A process (by default one that exits at once) in a session and group of its own,
    reaped by nobody but the test."""
    argv = argv or [sys.executable, "-c", "pass"]
    return os.posix_spawn(argv[0], argv, env, setsid=True)


def reaped(pid: int) -> bool:
    """True once our child ``pid`` is reaped (it is left as it is either way)."""
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return False


def run_without_a_turn(coro: Coroutine[object, object, int | None]) -> int | None:
    """What ``coro`` returns when it finishes without yielding to the loop; fails if it
    waits for anything."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    finally:
        coro.close()
    raise AssertionError("it waited for a turn of the loop")


async def test_stopping_an_exited_process_whose_group_is_gone_waits_for_nothing(
    marked_env: dict[str, str],
) -> None:
    """Every agent that ends by itself is stopped this way: no task, no turn of the loop."""
    pid = spawn_session(marked_env)
    _, status = await asyncio.to_thread(os.waitpid, pid, 0)
    assert (
        run_without_a_turn(stop_group(Exited(pid, os.waitstatus_to_exitcode(status)), grace=HANG))
        == 0
    )


async def test_an_exited_last_member_is_reaped_and_ends_the_stop_at_once(
    marked_env: dict[str, str],
) -> None:
    """A sandbox's init that exited (a zombie: its PID namespace, and everything in it, is
    gone) ends the group; when it is our child it is reaped on the way."""
    init = spawn_session(marked_env)
    await asyncio.to_thread(os.waitid, os.P_PID, init, os.WEXITED | os.WNOWAIT)  # not reaped
    bwrap = spawn_session(marked_env)  # the process stopped: exited, its exit known
    _, status = await asyncio.to_thread(os.waitpid, bwrap, 0)
    stopped = stop_group(Exited(bwrap, os.waitstatus_to_exitcode(status)), grace=HANG,
                         last=init, group=init)  # fmt: skip
    assert run_without_a_turn(stopped) == 0
    assert reaped(init)  # by the stop


async def test_a_live_last_member_is_killed_and_waited_for(marked_env: dict[str, str]) -> None:
    """While ``last`` runs the group is not gone: the stop kills it and waits for its exit."""
    init = spawn_session(marked_env, fake("sleeper"))
    bwrap = spawn_session(marked_env)
    _, status = await asyncio.to_thread(os.waitpid, bwrap, 0)
    async with asyncio.timeout(HANG):
        await stop_group(Exited(bwrap, os.waitstatus_to_exitcode(status)), grace=HANG,
                         last=init, group=init)  # fmt: skip
    assert reaped(init)
