"""Orphan-proofing: finding and stopping processes that escaped their group or their parent.

Every child carries ``ORCHESTRATOR_RUN_ID`` (and ``ORCHESTRATOR_AGENT_ID``) in its
environment, so a descendant that left its process group (``setsid``, a double fork) is still
found by a scan of ``/proc``. As child subreaper the orchestrator adopts such descendants and
reaps them; with ``PR_SET_DUMPABLE`` off, agents running as the same user cannot read its
``/proc`` files (its environment holds the API key). All synchronous: call the scans through
``asyncio.to_thread``.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
from collections.abc import Callable

RUN_ID_VAR = "ORCHESTRATOR_RUN_ID"
AGENT_ID_VAR = "ORCHESTRATOR_AGENT_ID"
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_DUMPABLE = 4
_SWEEP_PASSES = 8


SPAWNING = [0]
"""Spawns under way (forked, not yet in SPAWNED): the reaper waits while any are."""
SPAWNED: set[int] = set()
"""Direct children started here and not yet waited for: asyncio's watcher reaps those.
Process-wide by nature (it mirrors the kernel's list of our children), hence module state."""


def reap_orphans() -> list[int]:
    """Reap zombie children we did not spawn ourselves: descendants re-parented to us as
    the child subreaper. Never touches our own direct children (asyncio waits for those).

    Call it on the event loop's thread: a child forked but not yet recorded in `SPAWNED`
    would look adopted, so no reaping happens while a spawn is under way (`SPAWNING`).
    """
    if SPAWNING[0]:
        return []
    try:
        if os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            return []  # nothing waitable: skip the /proc scan
    except ChildProcessError:
        return []
    me = os.getpid()
    reaped = []
    for pid in _all_pids():
        if pid in SPAWNED:
            continue
        fields = stat_fields(pid)
        if len(fields) > 1 and fields[0] == b"Z" and int(fields[1]) == me:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    reaped.append(pid)
            except ChildProcessError:
                pass
    return reaped


def group_has_live_member(pgid: int) -> bool:
    """True while a non-zombie process is in the group (zombies wait for their reaper)."""
    for pid in _all_pids():
        fields = stat_fields(pid)
        if len(fields) > 3 and int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def sweep_run(run_id: str, *, agent_id: str = "", sig: int = signal.SIGKILL) -> list[int]:
    """Signal every process whose environment holds ``ORCHESTRATOR_RUN_ID=<run_id>``
    (and, with ``agent_id``, ``ORCHESTRATOR_AGENT_ID=<agent_id>`` too).

    Finds descendants that left their process group (``setsid``, double fork). Never signals
    the calling process; skips processes that vanish or cannot be read. Each match is opened
    as a pidfd before its environment is read, so a recycled pid is never signalled. Rescans
    while new matches turn up. Synchronous: call it through ``asyncio.to_thread``.
    """
    if not run_id:
        raise ValueError("run_id must not be empty")
    markers = {f"{RUN_ID_VAR}={run_id}".encode()}
    if agent_id:
        markers.add(f"{AGENT_ID_VAR}={agent_id}".encode())
    me = os.getpid()
    signalled: list[int] = []
    for _ in range(_SWEEP_PASSES):
        fresh = False
        for pid in _all_pids():
            if pid == me or pid in signalled:
                continue
            if _signal_if_marked(pid, markers, sig):
                signalled.append(pid)
                fresh = True
        if not fresh:
            break
    return signalled


def process_start_time(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (``/proc/<pid>/stat`` field 22).

    With the pid it names one process for good: a recycled pid has another start time.
    """
    try:
        return int(stat_fields(pid)[19])  # stat_fields()[0] is field 3 (state)
    except (IndexError, ValueError):
        return None


def stat_fields(pid: int) -> list[bytes]:
    """``/proc/<pid>/stat`` from field 3 (state) on; [] when the process is gone.

    The command name (field 2) may hold spaces and parentheses; it ends at the last ')'.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rpartition(b")")[2].split()
    except OSError:
        return []


def is_live(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    fields = stat_fields(pid)
    return bool(fields) and fields[0] != b"Z"


def set_not_dumpable() -> bool:
    """Make our /proc files (environ among them) unreadable to other processes of our user.

    Agents run as the same user; without this, a tool command could read the API key from
    ``/proc/$PPID/environ``. Children are not affected (exec makes them dumpable again).
    """
    prctl = libc_prctl()
    return prctl is not None and prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) == 0


def set_child_subreaper() -> bool:
    """Make orphaned descendants re-parent to us instead of init (Linux); True on success.

    The caller then owns reaping them: they turn into zombies of ours when they exit.
    """
    prctl = libc_prctl()
    if prctl is None:
        return False
    return bool(prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


@functools.cache
def libc_prctl() -> Callable[[int, int, int, int, int], int] | None:
    """libc's prctl, loaded once in the parent (never dlopen in a freshly forked child)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    fn: Callable[[int, int, int, int, int], int] = prctl
    return fn


def _all_pids() -> list[int]:
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    return [int(name) for name in names if name.isdigit()]


def _signal_if_marked(pid: int, markers: set[bytes], sig: int) -> bool:
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:  # gone, or no pidfd support: fall back to the racy way below
        pidfd = -1
    try:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            return False
        if not markers <= set(environ.split(b"\0")):
            return False
        try:
            if pidfd >= 0:
                signal.pidfd_send_signal(pidfd, sig)
            else:
                os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    finally:
        if pidfd >= 0:
            os.close(pidfd)
