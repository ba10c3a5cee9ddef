"""Short helper commands whose whole output is wanted (git plumbing): run, capture, reap.

Unlike agents (`orchestrator.process.spawn`), these are quick, bounded tools the orchestrator
runs for itself. Each runs in a session of its own; a cancellation or a timeout kills its
group and reaps it before the exception goes on, so none outlives the call.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.process import orphans


@dataclass(frozen=True, slots=True)
class Captured:
    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace").strip()


async def run_captured(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    limit: float = 300.0,
) -> Captured:
    """Run ``argv`` to its end and return what it printed; TimeoutError after ``limit`` s.

    It ends once the process has exited and both pipes are at their end (as asyncio's
    ``communicate``). Spawned synchronously (``vfork``, as asyncio does too) and then
    watched by loop callbacks alone: its pipes' readers and a pidfd for the exit (where
    there are none, a poll). No child watcher thread and no transports: asyncio's
    subprocesses start a thread per child and take several turns of the loop to connect,
    and each of those turns is one that a `cancel` or a ``status`` waits behind while git
    plumbing seals the work of agents that were just stopped (B8)."""
    child = _Captured.start(argv, cwd=cwd, env=env, stdin=stdin)
    try:
        async with asyncio.timeout(limit):
            await child.done
    except BaseException:
        child.kill()
        await asyncio.shield(child.exited)  # reaped: nothing outlives the call
        raise
    finally:
        child.close()
    code = child.proc.returncode
    assert code is not None, "the child was reaped"
    return Captured(tuple(argv), code, bytes(child.out[1]), bytes(child.out[2]))


_POLL_EXIT = 0.005
"""Where there are no pidfds, how often a helper's exit is polled."""


class _Captured:
    """One helper command: its output so far, its exit, its reaping (see `run_captured`)."""

    def __init__(self, proc: subprocess.Popen[bytes], fds: dict[int, int], data: bytes) -> None:
        self.loop = asyncio.get_running_loop()
        self.proc = proc
        self.fds = fds
        """Our ends: 1 and 2 read (stdout, stderr), 0 written (stdin, when given)."""
        self.out = {1: bytearray(), 2: bytearray()}
        self.data = memoryview(data)
        self.exited: asyncio.Future[None] = self.loop.create_future()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self._poll: asyncio.TimerHandle | None = None
        try:
            self._pidfd = os.pidfd_open(proc.pid)
        except (OSError, AttributeError):  # no pidfds: poll
            self._pidfd = -1
        for n in (1, 2):
            self.loop.add_reader(fds[n], self._read, n)
        if 0 in fds:
            self._write()
        if self._pidfd >= 0:
            self.loop.add_reader(self._pidfd, self._check)
        self._check()

    @classmethod
    def start(
        cls,
        argv: Sequence[str],
        *,
        cwd: Path | None,
        env: Mapping[str, str] | None,
        stdin: bytes | None,
    ) -> _Captured:
        ours: dict[int, int] = {}
        theirs: dict[int, int] = {}
        try:
            for n in (0, 1, 2) if stdin is not None else (1, 2):
                r, w = os.pipe()  # not inheritable (PEP 446)
                ours[n], theirs[n] = (w, r) if n == 0 else (r, w)
                os.set_blocking(ours[n], False)
            proc = subprocess.Popen(
                list(argv),
                stdin=theirs.get(0, subprocess.DEVNULL),
                stdout=theirs[1],
                stderr=theirs[2],
                cwd=cwd,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )
        except BaseException:
            for fd in ours.values():
                os.close(fd)
            raise
        finally:
            for fd in theirs.values():
                os.close(fd)
        orphans.SPAWNED.add(proc.pid)  # before any await: the orphan reaper must leave it to us
        return cls(proc, ours, stdin or b"")

    def _read(self, n: int) -> None:
        try:
            chunk = os.read(self.fds[n], 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if chunk:
            self.out[n] += chunk
        else:
            self._close(n)

    def _write(self) -> None:
        try:
            while self.data:
                self.data = self.data[os.write(self.fds[0], self.data) :]
        except (BlockingIOError, InterruptedError):
            self.loop.add_writer(self.fds[0], self._write)
            return
        except OSError:  # it exited without reading it all (a broken pipe): as asyncio does
            pass
        self._close(0)

    def _close(self, n: int) -> None:
        fd = self.fds.pop(n, -1)
        if fd < 0:
            return
        if n == 0:
            self.loop.remove_writer(fd)
        else:
            self.loop.remove_reader(fd)
        os.close(fd)
        self._settle()

    def _check(self) -> None:
        if self.proc.poll() is None:  # waitpid(WNOHANG): reaps it once it has exited
            if self._pidfd < 0:
                self._poll = self.loop.call_later(_POLL_EXIT, self._check)
            return
        self._unwatch()
        orphans.SPAWNED.discard(self.proc.pid)  # reaped: the pid may name another process now
        if not self.exited.done():
            self.exited.set_result(None)
        self._settle()

    def _settle(self) -> None:
        if self.exited.done() and 1 not in self.fds and 2 not in self.fds and not self.done.done():
            self._close(0)  # stdin not taken whole: nobody reads it any more
            self.done.set_result(None)

    def _unwatch(self) -> None:
        if self._pidfd >= 0:
            self.loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None

    def kill(self) -> None:
        """SIGKILL to its group while it runs (it leads a session of its own)."""
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        """Stop watching it. One not reaped yet (cancelled again while it died after `kill`)
        is left to the orphan reaper, which reaps any zombie of ours not in `SPAWNED`."""
        for n in list(self.fds):
            self._close(n)
        self._unwatch()
        if self.proc.returncode is None:
            self.proc.poll()
        orphans.SPAWNED.discard(self.proc.pid)
        if self.proc.returncode is None:  # SIGKILLed: its zombie is the reaper's, not Popen's
            self.proc.returncode = -signal.SIGKILL
        if not self.done.done():
            self.done.cancel()


async def start_child(*argv: str, **options: Any) -> asyncio.subprocess.Process:
    """`asyncio.create_subprocess_exec`, the child kept from the orphan reaper: in `SPAWNED`
    before anything else runs (the reaper holds off while it starts) until `release`. Taken
    by the reaper, it would read to asyncio as exit code 255 ("Unknown child process")."""
    with orphans.STARTING:
        proc = await asyncio.create_subprocess_exec(*argv, **options)
        orphans.SPAWNED.add(proc.pid)
    return proc


def release(proc: asyncio.subprocess.Process) -> None:
    """Once asyncio has reaped it: the reaper may take a new process with its pid."""
    if proc.returncode is not None:
        orphans.SPAWNED.discard(proc.pid)
