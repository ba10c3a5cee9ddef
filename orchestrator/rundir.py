"""The responses directory's ``.run/`` folder: its paths and the one-orchestrator lock."""

from __future__ import annotations

import fcntl
import os
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


class RunLock:
    """An exclusive ``flock`` on ``.run/lock`` held for the life of a run; holds the pid."""

    def __init__(self, rundir: RunDir) -> None:
        self.rundir = rundir
        self._fd: int | None = None

    def acquire(self) -> None:
        self.rundir.ensure()
        fd = os.open(self.rundir.lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = holder_pid(self.rundir)
            os.close(fd)
            raise RunLockedError(str(self.rundir.responses), holder) from None
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
