"""Stopping a process group: SIGTERM, a grace period, SIGKILL, reaping, and waiting until no
member is left. Never waits on a pipe's EOF."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Coroutine
from typing import Any, Protocol

from orchestrator.process.procfs import group_has_live_member, process_start_time

_REAP_TIMEOUT = 5.0
"""After SIGKILL a process dies at once unless it is stuck in the kernel; we wait this long."""
_GONE_TIMEOUT = 2.0
"""And this long for the rest of its group to die."""


class ProcessLike(Protocol):
    """What `stop_group` needs of a process; ``wait`` must return on exit, not on pipe EOF.

    ``asyncio.subprocess.Process`` fits, but its ``wait`` also waits for the pipes to close,
    so a descendant that escaped the group and holds a pipe delays it (bounded here).
    """

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...


async def stop_group(proc: ProcessLike, *, grace: float) -> int | None:
    """Stop ``proc``'s whole process group: SIGTERM, up to ``grace`` s, SIGKILL, reap.

    Idempotent, and fine when the process has already exited (then only leftovers of the group
    get SIGKILL). Cancelled while waiting out the grace period, it sends SIGKILL at once; what
    follows SIGKILL (the reap, the group's last members dying) is bounded and is finished
    even when cancelled, and then ``CancelledError`` goes on. Returns the exit code, or None
    when the process did not die even after SIGKILL (stuck in the kernel).
    """
    pgid = proc.pid
    cancelled: asyncio.CancelledError | None = None
    try:
        if proc.returncode is None:
            kill_group(pgid, signal.SIGTERM)
            try:
                async with asyncio.timeout(grace):
                    await proc.wait()
            except TimeoutError:
                pass
    except asyncio.CancelledError as exc:
        cancelled = exc  # a second cancel means "now": SIGKILL, finish the reap, re-raise
    kill_group(pgid, signal.SIGKILL)
    interrupted = await _finish(_reaped(proc), _REAP_TIMEOUT)
    interrupted |= await _finish(_wait_group_gone(pgid), _GONE_TIMEOUT)
    if cancelled is not None:
        raise cancelled
    if interrupted:
        raise asyncio.CancelledError
    return proc.returncode


async def _reaped(proc: ProcessLike) -> None:
    if proc.returncode is None:
        await proc.wait()


async def _finish(aw: Coroutine[Any, Any, None], limit: float) -> bool:
    """Run ``aw`` for at most ``limit`` seconds, and on even when the caller is cancelled
    meanwhile: cleanup after SIGKILL must not be cut short. True when the caller was
    cancelled (it re-raises once its cleanup is done)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    task = asyncio.ensure_future(aw)  # awaited to its end below, never left behind
    cancelled = False
    while not task.done() and (left := deadline - loop.time()) > 0:
        try:
            await asyncio.wait([task], timeout=left)
        except asyncio.CancelledError:
            cancelled = True
    if not task.done():
        task.cancel()
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            cancelled = True
    if not task.cancelled() and (error := task.exception()) is not None:
        raise error
    return cancelled


async def _wait_group_gone(pgid: int) -> None:
    """Wait until no member of the group is left, SIGKILL having been sent (bounded by the
    caller).

    A killed grandchild takes a moment to die; returning before it has would let a caller
    report "stopped" while a process of the group is still there.
    """
    delay = 0.001
    while True:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        if not group_has_live_member(pgid):
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)


def kill_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; False when the group is gone (or not ours).

    Refuses (ValueError) the groups that can never be a child's: 0, 1 and our own.
    """
    if pgid <= 1 or pgid == os.getpgrp():
        raise ValueError(f"refusing to signal process group {pgid}")
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def signal_recorded(pid: int | None, pstart: int | None, sig: int) -> bool:
    """Signal the group led by ``pid`` if ``pid`` is still the process that started at
    ``pstart`` (so a recycled pid is never signalled); False when it is not, or gone."""
    if not pid or pstart is None or process_start_time(pid) != pstart:
        return False
    return kill_group(pid, sig)
