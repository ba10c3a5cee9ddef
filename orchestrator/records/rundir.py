"""The responses directory's ``.run/`` folder: its paths, its files opened safely, the lock.

Every file of ``.run/`` is opened through `open_run_file`: never through a symbolic link
(``O_NOFOLLOW``), never blocking on a FIFO (``O_NONBLOCK``), and only when it is a regular
file owned by this user; anything else is `RunDirRefused` (exit 3) naming the file, never a
traceback or a hang. `RunDir.ensure` holds the directories to the same rules before it
creates anything in them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from orchestrator.errors import RunDirRefused, RunLockedError
from orchestrator.process.procfs import is_live

Kind = Literal["file", "directory", "socket"]
_IS: dict[Kind, Callable[[int], bool]] = {
    "file": stat.S_ISREG, "directory": stat.S_ISDIR, "socket": stat.S_ISSOCK,
}  # fmt: skip


def refused(path: Path | str, why: str, hint: str = "") -> RunDirRefused:
    """The error for a run-directory entry we will not use; ``why`` completes "PATH ..."."""
    text = f"error: {path} {why}"
    return RunDirRefused(text + (f" (hint: {hint})" if hint else ""))


def _what(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISREG, "a file"),
    ):  # fmt: skip
        if test(mode):
            return name
    return "a device"


def check_entry(path: Path | str, st: os.stat_result, kind: Kind) -> None:
    """Refuse ``path`` (its ``lstat``/``fstat``) unless it is a ``kind`` owned by this user."""
    if stat.S_ISLNK(st.st_mode):
        raise refused(path, "is a symbolic link; it is never followed", "remove it")
    if not _IS[kind](st.st_mode):
        raise refused(path, f"is {_what(st.st_mode)}, not a {kind}", "remove it")
    if st.st_uid != os.geteuid():
        raise refused(
            path,
            f"belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()})",
            "was it written by a run under sudo? chown it back, or use another --responses",
        )


def open_run_file(path: Path, flags: int) -> int:
    """Open a file of the run directory: no link, no FIFO, a regular file of this user.

    Refusals raise `RunDirRefused`; other failures (missing, no space) stay `OSError`."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        reasons = {
            errno.ELOOP: "is a symbolic link; it is never followed",
            errno.EISDIR: "is a directory, not a file",
            errno.ENXIO: "is a FIFO or a socket, not a file",
            errno.EACCES: "cannot be opened by this user (permission denied)",
            errno.EPERM: "cannot be opened by this user (operation not permitted)",
        }
        if exc.errno in reasons:
            hint = "remove it, or use another --responses"
            raise refused(path, reasons[exc.errno], hint) from None
        raise
    try:
        check_entry(path, os.fstat(fd), "file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` or none of it: a write the disk cut short is taken back, so a
    full disk or a file-size limit never leaves half a line behind (the error is raised)."""
    view = memoryview(data)
    done = 0
    try:
        while done < len(data):
            done += os.write(fd, view[done:])
    except OSError:
        if done:
            os.ftruncate(fd, os.fstat(fd).st_size - done)
        raise


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
        """The responses directory and its ``.run/``, created if missing: each must be a real
        directory of this user (checked before anything is created inside it)."""
        for path in (self.responses, self.run):
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                try:
                    path.mkdir(parents=path == self.responses, exist_ok=True)
                    st = os.lstat(path)
                except OSError as exc:
                    raise refused(path, f"cannot be created: {exc.strerror}") from None
            check_entry(path, st, "directory")
        # Before anything is written: what is already in the place of the journal and the
        # socket must be ours (a run refused later would have truncated the journal).
        entries: tuple[tuple[Path, Kind], ...] = ((self.journal, "file"), (self.socket, "socket"))
        for path, kind in entries:
            with contextlib.suppress(FileNotFoundError):
                check_entry(path, os.lstat(path), kind)


PROBE_WINDOW = 0.25
"""How long `RunLock.acquire` retries: `is_locked` probes (status, wait, watch) hold the lock
for microseconds and must not make a starting run believe another orchestrator owns it."""
CLEANUP_WAIT = 30.0
"""How long `RunLock.acquire` waits for a cleaner: `status` or `cancel` holding the lock while
it stops what a dead orchestrator left (grace periods included)."""


class RunLock:
    """An exclusive ``flock`` on ``.run/lock`` held for the life of a run; holds the pid."""

    def __init__(self, rundir: RunDir) -> None:
        self.rundir = rundir
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise `RunLockedError` naming the holder.

        A live orchestrator is answered within ~0.25 s. A holder whose recorded pid is gone
        is a cleaner (`status`, `cancel` stopping what that dead orchestrator left): it is
        waited for, up to `CLEANUP_WAIT`, and then this run starts."""
        self.rundir.ensure()
        fd = open_run_file(self.rundir.lock, os.O_RDWR | os.O_CREAT)
        try:
            if not _flock_soon(fd, fcntl.LOCK_EX, PROBE_WINDOW):
                # The holder writes its pid just after it got the lock: give it that moment.
                holder = _poll(lambda: holder_pid(self.rundir))
                cleaner = holder is None or not is_live(holder)
                if not (cleaner and _flock_soon(fd, fcntl.LOCK_EX, CLEANUP_WAIT)):
                    raise RunLockedError(str(self.rundir.responses), holder)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def holder_pid(rundir: RunDir) -> int | None:
    """The pid the lock file records (for messages); None when there is none to read."""
    try:
        fd = open_run_file(rundir.lock, os.O_RDONLY)
    except (OSError, RunDirRefused):
        return None
    try:
        text = os.read(fd, 64).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    return int(text) if text.isdigit() else None


@contextlib.contextmanager
def held_if_free(rundir: RunDir) -> Iterator[bool]:
    """Hold the lock for the block when no orchestrator does; yields whether it is held.

    For cleaning up after a dead orchestrator (`status`, `cancel`): while it is held, no new
    run can start and reuse the run id being swept. The pid in the file is left as it is.
    """
    try:
        fd = open_run_file(rundir.lock, os.O_RDONLY)
    except FileNotFoundError:
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
    """True while some orchestrator holds the lock (checked without taking it for long).

    A lock file that is not a plain file of this user raises `RunDirRefused`."""
    try:
        fd = open_run_file(rundir.lock, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _flock_soon(fd: int, how: int, within: float) -> bool:
    deadline = time.monotonic() + within
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
