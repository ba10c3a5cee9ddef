"""The guard: a process of its own that stops a run's processes when the orchestrator dies.

Why: a child must not outlive a SIGKILLed orchestrator. A death signal per child
(``setpriv --pdeathsig KILL``, one more exec a spawn) cost about 1 ms of CPU and 1-4 ms of
each unconfined agent's start and end (a 2,000-task plan of ``sleep`` commands, 64 at a
time, used 7.6-8.2 s of CPU with it, 5.2-6.5 s with the guard), and it reached the child
alone: whatever the child started lived on until ``status`` or ``--resume`` looked.

How: one guard per orchestrator process, started with a run that has no sandboxes (its pid
and start time go in the run's record), or else by the first spawn that needs it (``python
-I`` running `main`, in a session of its own: a Ctrl-C in the terminal is not for it; no
environment of ours: it holds no key and carries no run's marker). The orchestrator writes a
line on its stdin for every run whose processes it starts (``run <id>``) and one once it has
stopped them all (``end <id>``). When that pipe closes, which the kernel does for a process
that was killed as for one that exited, the guard stops every process of each run still
open (`orphans.stop_run`: each process whose environment carries the run's marker, with its
whole group, wherever it went with ``setsid``) and exits. A spawn for a run the guard watches
needs no death signal of its own (`orchestrator.process.spawn`, ``"auto"``); one without a
run's marker, or made while no guard can be started, gets ``setpriv`` as before.

An unconfined agent could kill the guard (it runs as the same user): the next spawn sees it
gone and starts another, which is told every open run again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

from orchestrator.process.procfs import process_start_time

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_CODE = (
    "import os, sys; os.chdir('/'); sys.path.insert(0, sys.argv[1]); "
    "from orchestrator.process.guard import main; main()"
)


class Guard:
    """The orchestrator's side: its guard process and the runs it was told of."""

    def __init__(self) -> None:
        self.pid: int | None = None
        """The guard's pid while it runs (as far as the last look saw)."""
        self._pipe = -1
        """Our end of its stdin."""
        self._pidfd = -1
        self._runs: set[str] = set()
        self._lock = threading.Lock()
        self.broken = False
        """No guard could be started: spawns take their own death signal from now on."""

    def covers(self, run_id: str) -> bool:
        """Make sure the guard watches ``run_id``'s processes (starting it, or another one
        if it died); False when it cannot, and the spawn needs a death signal of its own."""
        if not run_id or not run_id.isprintable() or any(c.isspace() for c in run_id):
            return False  # not one word of a line on the guard's pipe
        with self._lock:
            if self.broken:
                return False
            if not self._running() and not self._start():
                return False
            if run_id not in self._runs:
                if not self._tell(f"run {run_id}"):
                    return False
                self._runs.add(run_id)
            return True

    def record(self) -> dict[str, int | None] | None:
        """The guard's pid and start time, for the run's record (`control.leftovers.
        outlast_guard`: a resumed run waits for the dead orchestrator's guard); None while
        none runs."""
        pid = self.pid
        return None if pid is None else {"pid": pid, "pstart": process_start_time(pid)}

    def forget(self, run_id: str) -> None:
        """The run's processes are all stopped: the guard leaves that run alone from now on
        (a run resumed under the same id is the new orchestrator's to guard)."""
        with self._lock:
            if run_id in self._runs:
                self._runs.discard(run_id)
                if self._running():
                    self._tell(f"end {run_id}")

    def _running(self) -> bool:
        """Whether the guard is still there (known by its pidfd: its pid may be reaped by
        the orphan reaper once it died, and taken by another process since)."""
        if self.pid is None:
            return False
        try:
            if os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED | os.WNOHANG) is None:
                return True
        except ChildProcessError:  # the orphan reaper took it
            pass
        os.close(self._pidfd)
        os.close(self._pipe)
        self.pid, self._pidfd, self._pipe = None, -1, -1
        return False

    def _start(self) -> bool:
        if not sys.platform.startswith("linux"):  # no pidfds, no /proc to sweep
            self.broken = True
            return False
        read, write = os.pipe()  # both not inheritable: stdin is a copy of the read end
        try:
            pid = os.posix_spawn(
                sys.executable,
                [sys.executable, "-I", "-c", _CODE, _PACKAGE_ROOT],
                {},
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, read, 0),
                    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                    (os.POSIX_SPAWN_DUP2, 1, 2),
                ],
                setsid=True,
            )
        except OSError:
            os.close(write)
            self.broken = True
            return False
        finally:
            os.close(read)
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:  # no pidfds (an old kernel): no guard, a death signal per spawn
            os.close(write)
            os.kill(pid, signal.SIGKILL)
            self.broken = True
            return False
        os.set_blocking(write, False)
        self.pid, self._pidfd, self._pipe = pid, pidfd, write
        return all(self._tell(f"run {run_id}") for run_id in self._runs)

    def _tell(self, line: str) -> bool:
        try:
            os.write(self._pipe, f"{line}\n".encode())
        except OSError:  # gone (EPIPE), or not reading (a full pipe): another one next time
            if self.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
            return False
        return True


GUARD = Guard()
"""The process's guard (the children it watches are the process's: module state)."""


def main() -> None:
    """The guard process: read ``run``/``end`` lines until the orchestrator is gone, then
    stop what is left of every run still open."""
    from orchestrator.process.orphans import stop_run

    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    runs: dict[str, None] = {}
    for raw in sys.stdin.buffer:
        verb, _, run_id = raw.decode("utf-8", "replace").strip().partition(" ")
        if verb == "run" and run_id:
            runs[run_id] = None
        elif verb == "end":
            runs.pop(run_id, None)
    for run_id in runs:
        stop_run(run_id)
