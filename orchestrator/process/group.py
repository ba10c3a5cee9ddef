"""Stopping a process group: SIGTERM, a grace period, SIGKILL, reaping, and waiting until no
member is left. Never waits on a pipe's EOF."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Coroutine
from typing import Any, Literal, Protocol

from orchestrator.process.procfs import group_has_live_member, process_start_time, stat_fields

_REAP_TIMEOUT = 5.0
"""After SIGKILL a process dies at once unless it is stuck in the kernel; we wait this long."""
_GONE_TIMEOUT = 2.0
"""And this long for the rest of its group to die."""

_TERMINATED: dict[int, tuple[int, float]] = {}
"""Groups sent SIGTERM ahead of their `stop_group` (`terminate_recorded`): group id -> (its
leader's start time, when, on the monotonic clock). Process-wide by nature, like the
kernel's groups it mirrors; `stop_group` takes its group's entry."""


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


async def stop_group(
    proc: ProcessLike, *, grace: float, last: int | None = None, group: int | None = None
) -> int | None:
    """Stop ``proc``'s whole process group: SIGTERM, up to ``grace`` s, SIGKILL, reap.

    Idempotent, and fine when the process has already exited (then only leftovers of the group
    get SIGKILL). Cancelled while waiting out the grace period, it sends SIGKILL at once; what
    follows SIGKILL (the reap, the group's last members dying) is bounded and is finished
    even when cancelled, and then ``CancelledError`` goes on. Returns the exit code, or None
    when the process did not die even after SIGKILL (stuck in the kernel).

    ``last`` names a member whose exit means the group is empty (a sandbox's init: its PID
    namespace ends with it): its exit is awaited through a pidfd and reaped here if it is
    ours, so that the group is known to be gone without polling scans of ``/proc``. After a
    normal end (the process reaped, ``last`` exited or the group empty) nothing is waited
    for: the stop takes no turn of the loop.

    ``group``: the group the process's work runs in when it is not the process's own (a
    sandbox's, led by its init: SIGTERM goes there, not to bubblewrap); SIGKILL goes to
    both.
    """
    pgid = group or proc.pid
    cancelled: asyncio.CancelledError | None = None
    try:
        if proc.returncode is None:
            grace = _grace_left(pgid, grace)
            try:
                async with asyncio.timeout(grace):
                    await proc.wait()
            except TimeoutError:
                pass
    except asyncio.CancelledError as exc:
        cancelled = exc  # a second cancel means "now": SIGKILL, finish the reap, re-raise
    kill_group(pgid, signal.SIGKILL)
    if pgid != proc.pid:
        kill_group(proc.pid, signal.SIGKILL)
    interrupted = False
    # Each wait is a task and turns of the loop, milliseconds on a busy one: none is made
    # for what is known already.
    if proc.returncode is None:
        interrupted = await _finish(_reaped(proc), _REAP_TIMEOUT)
    if not _group_gone_nowait(pgid, last):
        interrupted |= await _finish(_wait_group_gone(pgid, last), _GONE_TIMEOUT)
    _TERMINATED.pop(pgid, None)  # a SIGTERM sent while this ran: the group is gone now
    if cancelled is not None:
        raise cancelled
    if interrupted:
        raise asyncio.CancelledError
    return proc.returncode


def _grace_left(pgid: int, grace: float) -> float:
    """Send the group its SIGTERM unless `terminate_recorded` sent it already; the grace
    left, counted from that one SIGTERM (a second one could read as "now" to the agent)."""
    sent = _TERMINATED.pop(pgid, None)
    if sent is None or process_start_time(pgid) != sent[0]:
        kill_group(pgid, signal.SIGTERM)
        return grace
    return max(0.0, grace - (time.monotonic() - sent[1]))


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


def _group_gone_nowait(pgid: int, last: int | None) -> bool:
    """True when no member of the group is left, known without waiting (``last`` has
    exited, see `stop_group`, or the group is empty); False when that is not known yet."""
    if last is not None and _exited_nowait(last, pgid):
        return True
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return True
    return False


async def _wait_group_gone(pgid: int, last: int | None = None) -> None:
    """Wait until no member of the group is left, SIGKILL having been sent (bounded by the
    caller).

    A killed grandchild takes a moment to die; returning before it has would let a caller
    report "stopped" while a process of the group is still there.
    """
    if last is not None and await _wait_exited(last, pgid):
        return  # the namespace's init: nothing of the group is left outside it
    delay = 0.0005
    while True:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        if not group_has_live_member(pgid):
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)


async def _wait_exited(pid: int, pgid: int) -> bool:
    """Wait for ``pid``, which was a member of group ``pgid``, to exit; reap it if it is ours
    (an orphan we adopted as the child subreaper). True once it has exited: gone already,
    or its pid now names a process of another group (recycled, never waited for). False
    where there are no pidfds."""
    fd = _pidfd(pid)
    if isinstance(fd, bool):
        return fd
    try:
        member = _member(pid, pgid)
        if member == "other":
            return True
        if member == "live":
            loop = asyncio.get_running_loop()
            exited: asyncio.Future[None] = loop.create_future()

            def readable() -> None:
                if not exited.done():
                    exited.set_result(None)

            loop.add_reader(fd, readable)
            try:
                await exited
            finally:
                loop.remove_reader(fd)
        _reap_nowait(fd)
        return True
    finally:
        os.close(fd)


def _exited_nowait(pid: int, pgid: int) -> bool:
    """`_wait_exited` without the wait: True when it would return at once (the exited
    ``pid`` reaped if it is ours); False while it runs, or where there are no pidfds."""
    fd = _pidfd(pid)
    if isinstance(fd, bool):
        return fd
    try:
        match _member(pid, pgid):
            case "live":
                return False
            case "zombie":
                _reap_nowait(fd)
        return True
    finally:
        os.close(fd)


def _pidfd(pid: int) -> int | bool:
    """A pidfd for ``pid``; True when it has exited and been reaped already (nothing to
    wait for), False where there are no pidfds (the caller cannot tell)."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (OSError, AttributeError):
        return False


def _member(pid: int, pgid: int) -> Literal["live", "zombie", "other"]:
    """What ``pid`` is to group ``pgid``, read once a pidfd holds it (so it is the process
    the pidfd names): a live member, an exited one not yet reaped, or no member (gone, or
    a recycled pid of another group: never reaped here)."""
    fields = stat_fields(pid)
    if len(fields) < 3 or int(fields[2]) != pgid:
        return "other"
    return "zombie" if fields[0] == b"Z" else "live"


def _reap_nowait(pidfd: int) -> None:
    """Reap the exited process of ``pidfd`` if it is our child (WNOHANG: never blocks)."""
    try:
        os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
    except OSError:
        pass  # not our child (or reaped meanwhile by the orphan reaper)


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


def terminate_recorded(pid: int | None, pstart: int | None) -> bool:
    """SIGTERM, now, to the group led by ``pid`` if ``pid`` is still the process that started
    at ``pstart``; once only: the group's `stop_group` sends no second one and counts its
    grace from this one. For a stop decided outside the agent's task (a cancel request), so
    the group gets its signal in the turn of the loop that decided it. False when it is not
    that process (gone), else True (sent now or before)."""
    if not pid or pstart is None:
        return False
    sent = _TERMINATED.get(pid)
    if sent is not None and sent[0] == pstart and process_start_time(pid) == pstart:
        return True
    if not signal_recorded(pid, pstart, signal.SIGTERM):
        return False
    _TERMINATED[pid] = (pstart, time.monotonic())
    return True


def stop_recorded(pid: int | None, pstart: int | None, *, force: bool) -> bool:
    """SIGKILL (``force``) or the group's one SIGTERM (`terminate_recorded`) to the group
    led by ``pid`` if it is still the process that started at ``pstart``."""
    if force:
        return signal_recorded(pid, pstart, signal.SIGKILL)
    return terminate_recorded(pid, pstart)
