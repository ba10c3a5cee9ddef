"""Orphan-proofing: finding and stopping processes that escaped their group or their parent.

Every child carries ``ORCHESTRATOR_RUN_ID`` (and ``ORCHESTRATOR_AGENT_ID``) in its
environment, so a descendant that left its process group (``setsid``, a double fork) is still
found by a scan of ``/proc``. As child subreaper the orchestrator adopts such descendants and
reaps them; with ``PR_SET_DUMPABLE`` off, agents running as the same user cannot read its
``/proc`` files (its environment holds the API key). All synchronous: call the scans through
``asyncio.to_thread`` (`sweep_agent` does, for the sweep after an agent's stop).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from orchestrator.process import libc
from orchestrator.process.procfs import (
    all_pids,
    close_marked,
    is_live,
    kill_marked,
    open_marked,
    signal_marked,
    stat_fields,
)

if TYPE_CHECKING:
    import asyncio

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_DUMPABLE = 4
_SWEEP_PASSES = 8
_SURVIVOR_PATIENCE = 2.0
"""Seconds `stop_run` waits for SIGKILLed processes to be gone before naming them."""


SPAWNED: set[int] = set()
"""Direct children started here and not yet reaped by their spawner (`process.spawn`,
`process.capture.start_child`). Process-wide by nature (it mirrors the kernel's list of our
children), hence module state."""


class _Starting:
    """Counts children being started where the pid is known only after a yield (asyncio's
    subprocesses): meanwhile the reaper leaves every zombie alone (`reap_orphans`)."""

    def __init__(self) -> None:
        self._count = 0
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        with self._lock:
            self._count += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._count -= 1

    def __bool__(self) -> bool:
        return self._count > 0


STARTING = _Starting()


def reap_orphans() -> list[int]:
    """Reap zombie children we did not spawn ourselves: descendants re-parented to us as
    the child subreaper. Never touches our own direct children (asyncio waits for those).

    Call it on the event loop's thread, where children are spawned: a spawn forks and
    records the child in `SPAWNED` without yielding in between, or holds `STARTING` until
    it has (asyncio's subprocesses), so a child of ours never looks adopted. (One taken
    here reads to asyncio as exit code 255: git plumbing failed at random in runs of
    hundreds of tasks.)
    """
    if STARTING:
        return []
    try:
        if os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            return []  # nothing waitable: skip the /proc scan
    except ChildProcessError:
        return []
    me = os.getpid()
    reaped = []
    children = _children(me)
    for pid in all_pids() if children is None else children:
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


def _children(me: int) -> list[int] | None:
    """Our children, adopted ones included, from each thread's ``children`` file in ``/proc``
    (None where the kernel keeps no such file: then every process is looked at). A scan of
    every process on the machine took 4.6 ms of the loop at 371 processes, each time
    anything was waitable; this reads one small file a thread (0.03 ms). The list may miss a
    child that is forking or exiting meanwhile: its zombie is reaped on a later look."""
    try:
        tids = os.listdir(f"/proc/{me}/task")
    except OSError:
        return None
    pids: list[int] = []
    for tid in tids:
        try:
            with open(f"/proc/{me}/task/{tid}/children", "rb") as fh:
                pids += map(int, fh.read().split())
        except FileNotFoundError:
            if tid == str(me):  # the main thread is there: the kernel lists no children
                return None
        except OSError:  # a thread that just exited
            pass
    return pids


def sweep_run(run_id: str, *, agent_id: str = "", sig: int = signal.SIGKILL) -> list[int]:
    """Signal every process whose environment holds ``ORCHESTRATOR_RUN_ID=<run_id>``
    (and, with ``agent_id``, ``ORCHESTRATOR_AGENT_ID=<agent_id>`` too).

    Finds descendants that left their process group (``setsid``, double fork). Never signals
    the calling process; skips processes that vanish or cannot be read. Each match is opened
    as a pidfd before its environment is read, so a recycled pid is never signalled; with
    SIGKILL its whole group goes at once (`kill_marked`: a fork-and-exit loop cannot outrun
    that). Rescans while new matches turn up. Synchronous: call it through ``asyncio.to_thread``.
    """
    return _sweep(run_id, {agent_id} if agent_id else None, sig)


def _sweep(run_id: str, agent_ids: Collection[str] | None, sig: int) -> list[int]:
    me = os.getpid()
    signalled: list[int] = []
    for _ in range(_SWEEP_PASSES):
        kill = sig == signal.SIGKILL
        found = open_marked(run_id, agent_ids, skip={me, *signalled}, stop=kill)
        try:
            signalled += kill_marked(found) if kill else signal_marked(found, sig)
        finally:
            close_marked(found)
        if not found:
            break
    return signalled


class _Batch:
    """Agents whose leftovers the next sweep of their run looks for, and its outcome."""

    __slots__ = ("agents", "done")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.agents: set[str] = set()
        self.done: asyncio.Future[list[int]] = loop.create_future()
        self.done.add_done_callback(_seen)  # its waiters may all be gone (the run torn down)


def _seen(done: asyncio.Future[list[int]]) -> None:
    if not done.cancelled():
        done.exception()


_NEXT: dict[str, _Batch] = {}
"""Per run id, the sweep still to start (it takes every agent that asks before it starts)."""
_UNDER_WAY: dict[str, asyncio.AbstractEventLoop] = {}
"""Run ids with a sweep in its thread now, and the loop that waits for it."""


async def sweep_agent(run_id: str, agent_id: str) -> list[int]:
    """`sweep_run` for one agent that was stopped, in a thread; the pids signalled (of every
    agent of its sweep).

    One sweep of a run at a time: agents stopped while one is under way (or in the same turn
    of the loop) share the next, one scan of ``/proc`` for all of them, which starts after
    each of them was stopped. ``cancel --all`` of 1,000 agents is then a few scans, not
    1,000 threads each reading every process's environment while the kernel ends the
    sandboxes and the loop answers requests."""
    import asyncio  # here: the guard process imports this module and must start fast

    loop = asyncio.get_running_loop()
    batch = _NEXT.get(run_id)
    if batch is None or batch.done.get_loop() is not loop:  # (another loop's: it ended)
        batch = _NEXT[run_id] = _Batch(loop)
        if _UNDER_WAY.get(run_id) is not loop:
            loop.call_soon(_start_sweep, loop, run_id)
    batch.agents.add(agent_id)
    return await asyncio.shield(batch.done)  # a cancelled waiter leaves it to the others


def _start_sweep(loop: asyncio.AbstractEventLoop, run_id: str) -> None:
    batch = _NEXT.pop(run_id, None)
    if batch is None:
        return
    _UNDER_WAY[run_id] = loop
    scan = loop.run_in_executor(None, _sweep, run_id, frozenset(batch.agents), signal.SIGKILL)

    def finished(scan: asyncio.Future[list[int]]) -> None:
        _UNDER_WAY.pop(run_id, None)
        if scan.cancelled():  # the executor shut down before it ran
            batch.done.cancel()
        elif (error := scan.exception()) is not None:
            batch.done.set_exception(error)
        else:
            batch.done.set_result(scan.result())
        if run_id in _NEXT:  # asked for while this one ran: it starts now
            _start_sweep(loop, run_id)

    scan.add_done_callback(finished)


def stop_run(run_id: str, *, patience: float = _SURVIVOR_PATIENCE) -> list[int]:
    """Kill every process of the run that is left (`sweep_run`), then wait up to ``patience``
    seconds for them to be gone; the pids still alive after that (SIGKILL did not end them:
    stuck in the kernel, or not ours to signal). Synchronous: call it through a thread."""
    sweep_run(run_id)
    deadline = time.monotonic() + patience
    while True:
        left = open_marked(run_id, stop=True)
        try:
            alive = [m.pid for m in left if is_live(m.pid)]
            kill_marked(left)  # found stopped: killed whatever comes next
            if not alive or time.monotonic() >= deadline:
                return sorted(alive)
        finally:
            close_marked(left)
        time.sleep(0.02)  # noqa: TID251 - runs in a worker thread, never on the event loop


def set_not_dumpable() -> bool:
    """Make our /proc files (environ among them) unreadable to other processes of our user.

    Agents run as the same user; without this, a tool command could read the API key from
    ``/proc/$PPID/environ``. Children are not affected (exec makes them dumpable again).
    """
    prctl = libc_prctl()
    return prctl is not None and prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) == 0


def die_with_parent(parent: int, sig: int = signal.SIGTERM) -> bool:
    """Get ``sig`` when the parent process dies; False when ``parent`` is already gone (then
    the caller should end at once). For helpers the orchestrator starts itself (the web
    server), so that even a SIGKILLed orchestrator leaves none of them behind."""
    prctl = libc_prctl()
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    return os.getppid() == parent


def set_child_subreaper() -> bool:
    """Make orphaned descendants re-parent to us instead of init (Linux); True on success.

    The caller then owns reaping them: they turn into zombies of ours when they exit.
    """
    prctl = libc_prctl()
    if prctl is None:
        return False
    return bool(prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def libc_prctl() -> Callable[[int, int, int, int, int], int] | None:
    """libc's prctl (`orchestrator.process.libc`: loaded once, in the parent)."""
    import ctypes

    return libc.function(
        "prctl", (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong),
        ctypes.c_int,
    )  # fmt: skip
