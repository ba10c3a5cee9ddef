"""Where sandboxes' private temp directories live, and the pruning of dead runs' leftovers.

Each orchestrator process has one scratch directory, ``<tmp>/orchestrator-sandbox-<uid>/<pid>``,
private to the user (mode 0700, checked: never a link or another user's directory), in which
every sandboxed spawn gets its own ``TMPDIR``. A run removes its scratch directory when it ends;
a killed one (SIGKILL, a crash, a power cut) cannot, so `prune_dead` removes at the next run's
start those whose owner is gone. An owner is gone when no process has its pid, or when the
process with its pid started at another time than the one the directory records (the pid was
recycled). A directory whose pid is alive and that records no start time is kept: a live run's
directory is never removed. All synchronous: call them off the event loop (but `SpareTmps`,
a few system calls each).

A spawn's temp directory that is left empty is kept for the next spawn (`SpareTmps`, held
by the run's `Confinement`) instead of being removed and made again: on ext4 each new inode
is found by a scan that skips recently deleted ones, which on a busy disk costs 0.3-1 ms of
the event loop per spawn (B7). Only an empty directory of ours, mode 0700, without extended
attributes (so no ACL either) is kept, once every process that could use it is gone: the
next spawn gets what a fresh one would be.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path

SPARES_MAX = 256
"""At most this many empty temp directories are kept per run."""
OWNER = ".owner"
"""In a scratch directory: the start time of the process that made it (``/proc`` clock ticks)."""


def default_scratch() -> Path:
    """Where private temp directories are made: one directory per orchestrator process."""
    return Path(tempfile.gettempdir(), f"orchestrator-sandbox-{os.getuid()}", str(os.getpid()))


def own_dir(path: Path) -> None:
    """Make ``path`` (and its parent) as private directories of ours; OSError when either
    is there already as something else (a link, another user's: a shared temp directory).

    A directory made here for this process records its start time (see `prune_dead`)."""
    for d in (path.parent, path):
        made = False
        try:
            d.mkdir(mode=0o700)
            made = True
        except FileExistsError:
            pass
        st = os.lstat(d)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            raise PermissionError(errno.EPERM, "not a private directory of ours", str(d))
        if made and d is path and path.name == str(os.getpid()):
            started = start_time(os.getpid())
            if started is not None:
                (path / OWNER).write_text(started)


class SpareTmps:
    """Empty temp directories of one run's scratch directory, kept for its next spawns (see
    the module); the run's `Confinement` holds it. `take` on the event loop's thread, `keep`
    from any (it only appends: a list's append and pop are atomic)."""

    def __init__(self) -> None:
        self._kept: list[tuple[Path, int]] = []
        """Each with its inode number: handed out only if it is still that directory."""

    def take(self, scratch: Path) -> Path:
        """A private temp directory in ``scratch`` for one spawn: an empty one kept by
        `keep`, else a new one (mode 0700)."""
        kept = self._kept
        while kept:
            tmp, ino = kept.pop()
            if tmp.parent != scratch:
                continue
            try:
                st = os.lstat(tmp)
            except OSError:
                continue  # removed with its scratch directory (a run's end)
            if st.st_ino == ino and stat.S_ISDIR(st.st_mode):
                return tmp
        return Path(tempfile.mkdtemp(prefix="tmp-", dir=scratch))

    def keep(self, tmp: Path) -> bool:
        """Keep ``tmp`` for `take` when it is as a fresh one would be (empty, ours, 0700, no
        extended attributes); False when not (remove it then). Only once every process that
        could write in it is gone."""
        if len(self._kept) >= SPARES_MAX:
            return False
        try:
            st = os.lstat(tmp)
            if (
                not stat.S_ISDIR(st.st_mode)
                or st.st_uid != os.getuid()
                or stat.S_IMODE(st.st_mode) != 0o700
            ):
                return False
            with os.scandir(tmp) as entries:
                if next(entries, None) is not None:
                    return False
            if os.listxattr(tmp, follow_symlinks=False):
                return False
        except OSError:
            return False
        self._kept.append((tmp, st.st_ino))
        return True

    def forget(self) -> None:
        """Hand out none of the kept directories any more (the scratch directory is being
        removed: a run's end)."""
        self._kept.clear()

    def __reduce__(self) -> tuple[type[SpareTmps], tuple[()]]:
        return (SpareTmps, ())  # on another machine (a cluster's node): none kept there


def prune_dead(scratch: Path) -> list[Path]:
    """Remove the scratch directories beside ``scratch`` whose owner is gone; the removed.

    Only directories of ours named by a pid are considered, never ``scratch`` itself."""
    parent = scratch.parent
    try:
        st = os.lstat(parent)
        entries = list(os.scandir(parent))
    except OSError:
        return []
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        return []  # not ours: touch nothing in it
    removed = []
    for entry in entries:
        path = Path(entry.path)
        if path == scratch or not entry.name.isdigit():
            continue
        try:
            est = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(est.st_mode) or est.st_uid != os.getuid():
            continue
        if _owner_alive(path, int(entry.name)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            removed.append(path)
    return removed


def _owner_alive(path: Path, pid: int) -> bool:
    now = start_time(pid)
    if now is None:
        return os.path.exists(f"/proc/{pid}")  # unreadable but there: keep it
    try:
        recorded = (path / OWNER).read_text().strip()
    except OSError:
        return True  # no record (an older run, or being made): alive as far as we know
    return recorded == now


def start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (field 22 of ``/proc/<pid>/stat``), None if gone.

    (`orchestrator.process.procfs` has the process layer's reader; the sandbox layer sits
    below it and keeps this one field to itself.)"""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rfind(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else None
