"""Short helper commands whose whole output is wanted (git plumbing): run, capture, reap.

Unlike agents (`orchestrator.process.spawn`), these are quick, bounded tools the orchestrator
runs for itself. Each runs in a session of its own; a cancellation or a timeout kills its
group and reaps it before the exception goes on, so none outlives the call.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.process import orphans
from orchestrator.process.child import Child


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
    child = _Captured(argv, cwd=cwd, env=env, stdin=stdin)
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


class _Captured:
    """One helper command (a `Child`): its output so far, its stdin fed as it takes it, and
    ``done`` once it has exited and both pipes are at their end (see `run_captured`)."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | None,
        env: Mapping[str, str] | None,
        stdin: bytes | None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.child = Child.start(self.loop, list(argv), cwd=cwd, env=env, stdin=stdin is not None)
        self.proc = self.child.proc
        self.fds = dict(self.child.fds)
        """Our ends: 1 and 2 read (stdout, stderr), 0 written (stdin, when given)."""
        self.out = {1: bytearray(), 2: bytearray()}
        self.data = memoryview(stdin or b"")
        self.exited = self.child.exited
        self.done: asyncio.Future[None] = self.loop.create_future()
        for n in (1, 2):
            os.set_blocking(self.fds[n], False)
            self.loop.add_reader(self.fds[n], self._read, n)
        if 0 in self.fds:
            self._write()
        self.exited.add_done_callback(lambda _: self._settle())

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

    def _settle(self) -> None:
        if self.exited.done() and 1 not in self.fds and 2 not in self.fds and not self.done.done():
            self._close(0)  # stdin not taken whole: nobody reads it any more
            self.done.set_result(None)

    def kill(self) -> None:
        """SIGKILL to its group while it runs (it leads a session of its own)."""
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        """Stop watching it (one not reaped yet is left to the orphan reaper: `Child.close`)."""
        for n in list(self.fds):
            self._close(n)
        self.child.close()
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
