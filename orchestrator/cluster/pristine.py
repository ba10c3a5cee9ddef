"""Whether a finished attempt left its checkout exactly as it was made, so that the next
attempt on the node may have it instead of a new one (`workspace.NodeRepo.take`).

`git status` (with ignored files) seeing nothing but the base is where this starts; it does
not see what else an attempt can leave behind for the next one, and these do:

- an empty directory (git tracks none), or a directory, file or link that is not a plain
  one git would have made: another mode (a read-only file, a directory nobody may enter),
  another owner, a file with a second name (a hard link made elsewhere writes into it), a
  socket or a pipe;
- the checkout's ``.git`` file pointing anywhere but its record, or its record holding more
  than a checkout's (per-worktree config, refs, a sparse-checkout list) or a ``HEAD`` that is
  not the base itself (a branch at the same commit);
- an index entry marked "assume unchanged" or "skip worktree": git then trusts the entry and
  no longer looks at the file, so `status` says nothing of a changed one.

A process of the attempt that is still alive is the caller's to look for (its marker).
Everything here reads file metadata only, synchronously: call it through a thread.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

_RECORD = frozenset({"HEAD", "ORIG_HEAD", "commondir", "gitdir", "index", "logs"})
"""What a worktree's record holds after `worktree add` and `reset --hard`."""
_ASSUMED = 0x8000
_EXTENDED = 0x4000
"""Index entry flags: "assume valid", and extended flags (skip-worktree, intent-to-add)."""


def untouched(checkout: Path, record: Path, base: str) -> bool:
    """True when ``checkout`` (a worktree whose record is ``record``, at commit ``base`` by
    `git status`) is as `worktree add` left it, as far as the next attempt can tell."""
    try:
        return (
            _points_to(checkout, record)
            and _record_is_plain(record, base)
            and _index_trusts_nothing(record / "index")
            and _plain_tree(checkout, _modes())
        )
    except OSError:
        return False


def empty_beside(checkout: Path) -> bool:
    """Remove everything in the checkout's own directory but the checkout (the attempt's
    other files); False if something could not be removed."""
    try:
        with os.scandir(checkout.parent) as entries:
            for entry in entries:
                if entry.name == checkout.name:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
    except OSError:
        return False
    return True


def _points_to(checkout: Path, record: Path) -> bool:
    fd = os.open(checkout / ".git", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with open(fd, "rb") as fh:
        return fh.read(4097) == f"gitdir: {record}\n".encode()


def _record_is_plain(record: Path, base: str) -> bool:
    if not set(os.listdir(record)) <= _RECORD:
        return False
    if (record / "logs").exists() and os.listdir(record / "logs") != ["HEAD"]:
        return False
    with open(record / "HEAD", "rb") as fh:
        return fh.read(128) == f"{base}\n".encode()


def _index_trusts_nothing(index: Path) -> bool:
    """No entry of ``index`` tells git to stop looking at its file. Git writes version 2
    unless an entry has extended flags (then 3) or it is told to (then not read here)."""
    with open(index, "rb") as fh:
        data = fh.read()
    if len(data) < 12 or data[:4] != b"DIRC" or int.from_bytes(data[4:8], "big") != 2:
        return False
    pos = 12
    for _ in range(int.from_bytes(data[8:12], "big")):
        if pos + 62 > len(data):
            return False
        flags = int.from_bytes(data[pos + 60 : pos + 62], "big")
        if flags & (_ASSUMED | _EXTENDED):
            return False
        size = flags & 0xFFF
        if size == 0xFFF:  # a longer name: up to its NUL
            size = data.find(b"\0", pos + 62) - (pos + 62)
            if size < 0:
                return False
        pos += (62 + size + 8) & ~7  # the name NUL-terminated, padded to eight bytes
    return True


def _modes() -> tuple[int, int, int]:
    """The modes git gives a directory, a file and an executable file under our umask."""
    mask = 0o022
    with open("/proc/self/status", "rb") as fh:
        for line in fh:
            if line.startswith(b"Umask:"):
                mask = int(line.split()[1], 8)
    return 0o777 & ~mask, 0o666 & ~mask, 0o777 & ~mask


def _plain_tree(checkout: Path, modes: tuple[int, int, int]) -> bool:
    directory, plain, executable = modes
    uid = os.getuid()
    top = os.lstat(checkout)
    if not stat.S_ISDIR(top.st_mode) or stat.S_IMODE(top.st_mode) != directory:
        return False
    stack = [checkout]
    while stack:
        here = stack.pop()
        with os.scandir(here) as entries:
            count = 0
            for entry in entries:
                count += 1
                if here == checkout and entry.name == ".git":
                    continue  # checked on its own
                st = entry.stat(follow_symlinks=False)
                if st.st_uid != uid:
                    return False
                kind, mode = stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode)
                if kind == stat.S_IFDIR:
                    if mode != directory:
                        return False
                    stack.append(Path(entry.path))
                elif kind == stat.S_IFREG:
                    if mode not in (plain, executable) or st.st_nlink != 1:
                        return False
                elif kind != stat.S_IFLNK:
                    return False
        if count == 0 and here != checkout:
            return False  # an empty directory: git never makes one
    return True
