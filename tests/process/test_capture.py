"""Helper commands (git plumbing): output, exit code, stdin, timeouts and cancels; no leftovers."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import uuid
from collections.abc import AsyncIterator

import pytest
from fakes import RUN_ID_VAR, wait_until_no_marked

from orchestrator.process import orphans
from orchestrator.process.capture import run_captured

HANG = 10.0
"""Gross bound that only detects hangs."""


@pytest.fixture
async def marked_env() -> AsyncIterator[dict[str, str]]:
    run_id = f"test-capture-{uuid.uuid4().hex}"
    yield dict(os.environ, **{RUN_ID_VAR: run_id})
    assert await wait_until_no_marked(run_id) == []
    assert not orphans.SPAWNED, "each child is forgotten once reaped"


async def test_output_of_both_streams_and_the_exit_code(marked_env: dict[str, str]) -> None:
    got = await run_captured(["sh", "-c", "echo out; echo err >&2; exit 3"], env=marked_env)
    assert (got.returncode, got.stdout, got.stderr) == (3, b"out\n", b"err\n")
    assert (got.out, got.err) == ("out\n", "err")


async def test_a_megabyte_goes_in_and_comes_back_whole(marked_env: dict[str, str]) -> None:
    data = os.urandom(1 << 20)
    got = await run_captured(["cat"], env=marked_env, stdin=data)
    assert got.returncode == 0
    assert got.stdout == data


async def test_stdin_nobody_reads_is_no_error(marked_env: dict[str, str]) -> None:
    got = await run_captured(["true"], env=marked_env, stdin=b"x" * (1 << 20))
    assert got.returncode == 0


async def test_no_stdin_reads_as_empty(marked_env: dict[str, str]) -> None:
    got = await run_captured(["cat"], env=marked_env)
    assert (got.returncode, got.stdout) == (0, b"")


async def test_more_output_than_a_pipe_holds_arrives_whole(marked_env: dict[str, str]) -> None:
    code = "import sys; sys.stdout.write('x' * 3_000_000); sys.stderr.write('y' * 300_000)"
    got = await run_captured([sys.executable, "-c", code], env=marked_env)
    assert (len(got.stdout), len(got.stderr)) == (3_000_000, 300_000)


async def test_a_missing_program_raises_at_the_call(marked_env: dict[str, str]) -> None:
    with pytest.raises(FileNotFoundError):
        await run_captured(["/nonexistent/program"], env=marked_env)


async def test_the_limit_kills_the_group_and_raises(marked_env: dict[str, str]) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(HANG):
            await run_captured(["sh", "-c", "sleep 30 & sleep 30"], env=marked_env, limit=0.2)


async def test_a_cancel_kills_the_group_before_it_propagates(marked_env: dict[str, str]) -> None:
    started = asyncio.Event()

    async def slow() -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, started.set)
        await run_captured(["sh", "-c", "sleep 30 & sleep 30"], env=marked_env)

    task = asyncio.create_task(slow())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(HANG):
            await task


async def test_many_at_once_start_no_thread(marked_env: dict[str, str]) -> None:
    """No child watcher thread per command: the loop's callbacks see each one through."""
    before = threading.active_count()
    done = await asyncio.gather(*(run_captured(["true"], env=marked_env) for _ in range(20)))
    assert [d.returncode for d in done] == [0] * 20
    assert threading.active_count() == before
