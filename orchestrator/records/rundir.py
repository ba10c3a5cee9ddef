"""The responses directory's ``.run/`` folder: its paths and the one-orchestrator lock."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import RunLockedError, WorkspaceRefused


@dataclass(frozen=True)
class RunDir:
    responses: Path

    @property
    def run(self) -> Path:
        return self.responses / ".run"

    @property
    def journal(self) -> Path:
        return self.run / "journal.jsonl"

    @property
    def lock(self) -> Path:
        return self.run / "lock"

    @property
    def socket(self) -> Path:
        return self.run / "control.sock"

    def ensure(self) -> None:
        try:
            self.run.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WorkspaceRefused(f"error: cannot create {self.run}: {exc.strerror}") from exc
        if self.responses.is_symlink() or self.run.is_symlink():
            raise WorkspaceRefused(f"error: {self.run} must not be a symlink")


PROBE_WINDOW = 0.25
"""How long `RunLock.acquire` retries: `is_locked` probes (status, wait, watch) hold the lock
for microseconds and must not make a starting run believe another orchestrator owns it."""


class RunLock:
    """An exclusive ``flock`` on ``.run/lock`` held for the life of a run; holds the pid."""

    def __init__(self, rundir: RunDir) -> None:
        self.rundir = rundir
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise `RunLockedError` naming the holder; blocks at most ~0.25 s."""
        self.rundir.ensure()
        fd = os.open(self.rundir.lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        if not _flock_soon(fd, fcntl.LOCK_EX):
            # The holder writes its pid just after it got the lock: give it that moment.
            holder = _poll(lambda: holder_pid(self.rundir))
            os.close(fd)
            raise RunLockedError(str(self.rundir.responses), holder)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def holder_pid(rundir: RunDir) -> int | None:
    try:
        text = rundir.lock.read_text().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def held_if_free(rundir: RunDir) -> Iterator[bool]:
    """Hold the lock for the block when no orchestrator does; yields whether it is held.

    For cleaning up after a dead orchestrator (`status`, `cancel`): while it is held, no new
    run can start and reuse the run id being swept. The pid in the file is left as it is.
    """
    try:
        fd = os.open(rundir.lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def is_locked(rundir: RunDir) -> bool:
    """True while some orchestrator holds the lock (checked without taking it for long)."""
    try:
        fd = os.open(rundir.lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _flock_soon(fd: int, how: int) -> bool:
    deadline = time.monotonic() + PROBE_WINDOW
    while True:
        try:
            fcntl.flock(fd, how | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
        # Before the run starts (nothing else is on the loop yet) and only while contended.
        time.sleep(0.005)  # noqa: TID251


def _poll(read: Callable[[], int | None]) -> int | None:
    deadline = time.monotonic() + PROBE_WINDOW
    while (value := read()) is None and time.monotonic() < deadline:
        time.sleep(0.005)  # noqa: TID251 - see _flock_soon
    return value
