"""A spawned child watched by the event loop alone.

Its exit is seen through a pidfd on the loop (or, where there are none, by polling) and it is
reaped here, never by asyncio's child watcher: no watcher thread, no transports, and nothing
about its exit depends on a pipe reaching EOF. Agents' processes (`orchestrator.process.spawn`)
and helper commands (`orchestrator.process.capture`) are both started this way.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from orchestrator.process.orphans import SPAWNED

_POLL_EXIT = 0.02
"""Where there are no pidfds, how often a child's exit is polled."""


class Child:
    """A spawned process as `ProcessLike`: ``wait`` returns on its exit, whatever its pipes do.

    The exit is seen through a pidfd on the event loop (or, where there are none, by polling),
    and the child is reaped here, never by asyncio's child watcher: nothing about it depends
    on a pipe reaching EOF or on a watcher thread.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, proc: subprocess.Popen[bytes], fds: dict[int, int]
    ) -> None:
        self._loop = loop
        self._proc = proc
        self.fds = fds
        """Our ends of its pipes (see `start`); whoever reads them owns them from now on."""
        self.exited: asyncio.Future[None] = loop.create_future()
        self._poll: asyncio.TimerHandle | None = None
        try:
            self._pidfd = os.pidfd_open(proc.pid)
        except (OSError, AttributeError):  # no pidfds (old kernel, not Linux): poll instead
            self._pidfd = -1
        if self._pidfd >= 0:
            loop.add_reader(self._pidfd, self._check)
        self._check()

    @classmethod
    def start(
        cls,
        loop: asyncio.AbstractEventLoop,
        args: list[str],
        *,
        cwd: Path | None,
        env: Mapping[str, str] | None,
        preexec: Callable[[], None] | None = None,
        pass_fds: tuple[int, ...] = (),
        stdin: bool = False,
    ) -> Child:
        """Fork and exec (synchronously, as ``loop.subprocess_exec`` would) in a session of
        its own and watch the exit. ``fds`` holds our ends of its pipes: stdout (1) and
        stderr (2) to read, and with ``stdin`` its stdin (0) to write, non-blocking (else it
        reads /dev/null)."""
        ours: dict[int, int] = {}
        theirs: dict[int, int] = {}
        try:
            for n in (0, 1, 2) if stdin else (1, 2):
                r, w = os.pipe()  # not inheritable (PEP 446)
                ours[n], theirs[n] = (w, r) if n == 0 else (r, w)
            if stdin:
                os.set_blocking(ours[0], False)
            proc = subprocess.Popen(
                args,
                stdin=theirs.get(0, subprocess.DEVNULL),
                stdout=theirs[1],
                stderr=theirs[2],
                cwd=cwd,
                env=dict(env) if env is not None else None,
                start_new_session=True,
                preexec_fn=preexec,
                pass_fds=pass_fds,
            )
        except BaseException:
            for fd in ours.values():
                os.close(fd)
            raise
        finally:
            for fd in theirs.values():
                os.close(fd)
        SPAWNED.add(proc.pid)  # before any await: the orphan reaper must leave it to us
        return cls(loop, proc, ours)

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self._proc

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    async def wait(self) -> int:
        # shield: a cancelled waiter must not cancel the shared future.
        await asyncio.shield(self.exited)
        code = self.returncode
        assert code is not None
        return code

    def close(self) -> None:
        """Stop watching. A child not reaped yet (stuck in the kernel) is left to the orphan
        reaper, which reaps any zombie of ours that is not in `SPAWNED`."""
        self._unwatch()
        if self._proc.returncode is None:
            self._proc.poll()
        SPAWNED.discard(self._proc.pid)
        if self._proc.returncode is None:
            # It got SIGKILL and will be a zombie of ours: the reaper takes it, not Popen.
            self._proc.returncode = -signal.SIGKILL

    def _check(self) -> None:
        if self._proc.poll() is None:  # waitpid(WNOHANG): reaps it once it has exited
            if self._pidfd < 0 and self._poll is None:
                self._poll = self._loop.call_later(_POLL_EXIT, self._tick)
            return
        self._unwatch()
        if not self.exited.done():
            self.exited.set_result(None)

    def _tick(self) -> None:
        self._poll = None
        self._check()

    def _unwatch(self) -> None:
        if self._pidfd >= 0:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
