"""Stopping a group when the stop is decided outside the agent's task: one SIGTERM, at once."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fakes import RUN_ID_VAR, fake, is_running, wait_until_gone, wait_until_no_marked

from orchestrator.process.group import stop_recorded, terminate_recorded
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
