"""Every read of ``/proc``: process state and start times, group members, and the one scan
for processes that carry a run's environment markers.

Every child carries ``ORCHESTRATOR_RUN_ID`` and ``ORCHESTRATOR_AGENT_ID`` in its environment,
so a descendant that left its process group (``setsid``, a double fork) is still found here.
All synchronous and Linux-only (elsewhere nothing is found): call through ``asyncio.to_thread``
from async code.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Collection
from dataclasses import dataclass

RUN_ID_VAR = "ORCHESTRATOR_RUN_ID"
AGENT_ID_VAR = "ORCHESTRATOR_AGENT_ID"
OUTER_RUNS_VAR = "ORCHESTRATOR_OUTER_RUN_IDS"
"""The ids of the runs a nested run was started under (``:``-separated): their scans find the
nested run's processes too, whatever became of the nested orchestrator."""


def all_pids() -> list[int]:
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    return [int(name) for name in names if name.isdigit()]


def stat_fields(pid: int) -> list[bytes]:
    """``/proc/<pid>/stat`` from field 3 (state) on; [] when the process is gone.

    The command name (field 2) may hold spaces and parentheses; it ends at the last ')'.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rpartition(b")")[2].split()
    except OSError:
        return []


def process_start_time(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (``/proc/<pid>/stat`` field 22).

    With the pid it names one process for good: a recycled pid has another start time.
    """
    try:
        return int(stat_fields(pid)[19])  # stat_fields()[0] is field 3 (state)
    except (IndexError, ValueError):
        return None


def is_live(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    fields = stat_fields(pid)
    return bool(fields) and fields[0] != b"Z"


def group_has_live_member(pgid: int) -> bool:
    """True while a non-zombie process is in the group (zombies wait for their reaper)."""
    for pid in all_pids():
        fields = stat_fields(pid)
        if len(fields) > 3 and int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


@dataclass(frozen=True, slots=True)
class Marked:
    """A live process of a run, held by a pidfd (-1 where pidfds are missing) so that a
    recycled pid is never signalled. Close it with `close_marked`."""

    pid: int
    pidfd: int
    agent_id: str


def open_marked(
    run_id: str,
    agent_ids: Collection[str] | None = None,
    *,
    skip: Collection[int] = (),
    stop: bool = False,
) -> list[Marked]:
    """The processes whose environment holds ``ORCHESTRATOR_RUN_ID=<run_id>``, or names it
    among the outer runs of a nested run (and, with ``agent_ids``, whose
    ``ORCHESTRATOR_AGENT_ID`` is among them), never the caller nor ``skip``.

    Each is opened as a pidfd before its environment is read, so what is returned is the
    process that carried the marker. Processes that vanish or cannot be read are skipped.
    With ``stop``, each is sent SIGSTOP the moment it is found (for `kill_marked`): a scan
    takes milliseconds, and a process that forks and exits could otherwise be gone, its
    successor running, by the time the scan ends.
    """
    if not run_id:
        raise ValueError("run_id must not be empty")
    run_marker = f"{RUN_ID_VAR}={run_id}".encode()
    agent_var = f"{AGENT_ID_VAR}=".encode()
    outer_var = f"{OUTER_RUNS_VAR}=".encode()
    outer_id = run_id.encode()
    me = os.getpid()
    wanted = None if agent_ids is None else [agent_var + a.encode() for a in agent_ids]
    found: list[Marked] = []

    def ours(environ: list[bytes]) -> bool:
        return run_marker in environ or any(
            v.startswith(outer_var) and outer_id in v[len(outer_var) :].split(b":") for v in environ
        )

    for pid in all_pids():
        if pid == me or pid in skip:
            continue
        raw = _environ(pid)  # most processes are not ours: no pidfd, no parse for them
        if raw is None or (run_marker not in raw and outer_var not in raw):
            continue
        if wanted is not None and not any(w in raw for w in wanted):
            continue  # another agent's (a sweep after one stop passes all the run's others)
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:  # gone, or no pidfd support: signalled by pid (racy) below
            pidfd = -1
        raw = _environ(pid)  # again, after the pidfd: the process it names carries the marker
        environ = raw.split(b"\0") if raw is not None else []
        agent = next((v[len(agent_var) :] for v in environ if v.startswith(agent_var)), b"")
        agent_id = agent.decode("utf-8", "replace")
        if ours(environ) and (agent_ids is None or agent_id in agent_ids):
            found.append(Marked(pid, pidfd, agent_id))
            if stop:
                signal_marked(found[-1:], signal.SIGSTOP)
        elif pidfd >= 0:
            os.close(pidfd)
    return found


_ENVIRON_CHUNK = 65536


def _environ(pid: int) -> bytes | None:
    """``/proc/<pid>/environ`` (None when it cannot be read): plain descriptor calls, three
    system calls for most processes where ``open()`` makes seven; a sweep reads every
    process's."""
    try:
        fd = os.open(f"/proc/{pid}/environ", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, _ENVIRON_CHUNK)
        if len(data) < _ENVIRON_CHUNK:
            return data
        parts = [data]
        while chunk := os.read(fd, _ENVIRON_CHUNK):
            parts.append(chunk)
        return b"".join(parts)
    except OSError:
        return None
    finally:
        os.close(fd)


def signal_marked(marked: Collection[Marked], sig: int) -> list[int]:
    """Send ``sig`` to each process; the pids that were still there to get it."""
    got = []
    for m in marked:
        try:
            if m.pidfd >= 0:
                signal.pidfd_send_signal(m.pidfd, sig)
            else:
                os.kill(m.pid, sig)
        except (ProcessLookupError, PermissionError):
            continue
        got.append(m.pid)
    return got


def kill_marked(marked: Collection[Marked], *, patience: float = 0.05) -> list[int]:
    """SIGKILL each process, and first every process of its group at once.

    Pid by pid, a process that keeps forking and exiting outruns the scan (a new pid every
    few ms); one ``killpg`` ends the whole group, a child forked a moment ago included. Each
    is stopped through its pidfd first, and its group read once it shows stopped and is
    still alive: a stopped process cannot exit, fork or leave its group, so the group id
    signalled is its own, never a recycled one. Never the caller's own group; a process that
    does not stop within ``patience`` seconds (busy in the kernel) is killed alone. The pids
    that were still there to get the SIGKILL.
    """
    held = [m for m in marked if m.pidfd >= 0]
    signal_marked(held, signal.SIGSTOP)
    own = os.getpgrp()
    deadline = time.monotonic() + patience
    for m in held:
        while (fields := stat_fields(m.pid)) and fields[0] not in (b"T", b"t", b"Z", b"X"):
            if time.monotonic() > deadline:
                break
            time.sleep(0.001)  # noqa: TID251 - synchronous by contract: called from a thread
        stopped = bool(fields) and fields[0] in (b"T", b"t")
        if stopped and any_alive([m]) and int(fields[2]) not in (own, 0, 1):
            try:
                os.killpg(int(fields[2]), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    return signal_marked(marked, signal.SIGKILL)


def any_alive(marked: Collection[Marked]) -> bool:
    """Whether one of them still runs (a pidfd turns readable when its process exits)."""
    fds = [m.pidfd for m in marked if m.pidfd >= 0]
    if any(m.pidfd < 0 and is_live(m.pid) for m in marked):
        return True
    if not fds:
        return False
    readable, _, _ = select.select(fds, [], [], 0)
    return len(readable) < len(fds)


def close_marked(marked: Collection[Marked]) -> None:
    for m in marked:
        if m.pidfd >= 0:
            os.close(m.pidfd)
