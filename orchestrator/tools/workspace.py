"""The workspace an agent may act on, and the paths in it that stay read-only.

`Workspace.resolve` checks a path lexically (no NUL, no ``..`` above the root, no absolute path
outside it), then for real (symlinks at any component resolved and required to stay inside;
writes refused under protected paths); `Workspace.open_fd` then opens it from the root one
component at a time with ``O_NOFOLLOW``, so a symlink swapped in after the check is refused
rather than followed. Refusals raise `ToolError`, written for the model to read.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from orchestrator.errors import WorkspaceRefused

MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255


class ToolError(Exception):
    """A tool refused or failed; the message is meant for the model and names the path.

    `dispatch` turns it into an error result (``is_error``); code that calls the file
    functions directly (the scripted agent) catches it itself. It is not an
    `OrchestratorError`: it is the model's (or the script's) mistake, answered as a value.
    """


# --- the workspace --------------------------------------------------------------------------


class Workspace:
    """A directory an agent may work in, and the paths inside it that stay read-only.

    Protected (never written by a tool): the responses directory, ``.git/hooks`` and
    ``.git/config`` (both run code on the user's next git command), and any ``protect`` paths.
    """

    __slots__ = ("_given", "protected", "root")

    def __init__(
        self, root: Path, *, responses: Path | None = None, protect: Sequence[str | Path] = ()
    ) -> None:
        real = Path(os.path.realpath(root))
        if not real.is_dir():
            raise WorkspaceRefused(f"error: workspace {root} is not a directory")
        self.root = real
        self._given = Path(os.path.abspath(root))
        wanted = [real / ".git" / "hooks", real / ".git" / "config"]
        wanted += [real / p for p in protect]
        if responses is not None:
            wanted.append(Path(os.path.abspath(responses)))
        # Both the lexical and the resolved form: a protected path may itself be a symlink.
        protected = {p for w in wanted for p in (w, Path(os.path.realpath(w)))}
        self.protected: tuple[Path, ...] = tuple(sorted(protected))

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    def resolve(self, path: str, *, for_write: bool) -> Path:
        """The real absolute path ``path`` names inside the workspace, or `ToolError`."""
        rel = self._lexical(path)
        real = Path(os.path.realpath(self.root / rel))
        if not _is_within(real, self.root):
            raise ToolError(
                f"refused: {path!r} leads outside the workspace through a symbolic link (to {real})"
            )
        if for_write:
            for guarded in self.protected:
                if _is_within(real, guarded):
                    raise ToolError(
                        f"refused: {path!r} is inside {self.display(guarded)}, which is "
                        "protected (agents may read it, not write it)"
                    )
        return real

    def display(self, real: Path) -> str:
        """``real`` relative to the workspace root when inside it (for messages)."""
        if _is_within(real, self.root):
            rel = real.relative_to(self.root).as_posix()
            return rel if rel != "." else "the workspace root"
        return str(real)

    def _lexical(self, path: str) -> PurePosixPath:
        if not isinstance(path, str) or not path.strip():
            raise ToolError("refused: the path is empty")
        if "\x00" in path:
            raise ToolError("refused: the path contains a NUL byte")
        if not encodable(path):
            raise ToolError("refused: the path is not valid Unicode text (lone surrogate)")
        if len(path.encode("utf-8")) > MAX_PATH_BYTES:
            raise ToolError(f"refused: the path is longer than {MAX_PATH_BYTES} bytes")
        pure = PurePosixPath(path)
        if pure.is_absolute():
            base = next((b for b in (self.root, self._given) if _is_within(Path(pure), b)), None)
            if base is None:
                raise ToolError(
                    f"refused: {path!r} is outside the workspace; use a path relative to "
                    "the workspace root"
                )
            pure = pure.relative_to(base)
        parts: list[str] = []
        for part in pure.parts:
            if len(part.encode("utf-8")) > MAX_NAME_BYTES:
                raise ToolError(
                    f"refused: a name in {path[:80]!r}... is longer than {MAX_NAME_BYTES} bytes"
                )
            if part == "..":
                if not parts:
                    raise ToolError(f"refused: {path!r} goes above the workspace root ('..')")
                parts.pop()
            else:
                parts.append(part)
        return PurePosixPath(*parts) if parts else PurePosixPath(".")

    def open_fd(
        self, real: Path, flags: int, *, mode: int = 0o644, make_parents: bool = False
    ) -> int:
        """Open ``real`` (from `resolve`) walking down from the root without following links.

        Every directory on the way is opened with ``O_NOFOLLOW | O_DIRECTORY`` relative to the
        one before, the file itself with ``O_NOFOLLOW``: a symlink that appeared after
        `resolve` is refused (``ELOOP``/``ENOTDIR``), never followed.
        """
        parts = real.relative_to(self.root).parts
        if not parts:
            raise IsADirectoryError(errno.EISDIR, "is a directory")
        dir_flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.root, dir_flags)
        try:
            for name in parts[:-1]:
                try:
                    child = os.open(name, dir_flags, dir_fd=fd)
                except FileNotFoundError:
                    if not make_parents:
                        raise
                    os.mkdir(name, 0o755, dir_fd=fd)
                    child = os.open(name, dir_flags, dir_fd=fd)
                os.close(fd)
                fd = child
            return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=fd)
        finally:
            os.close(fd)


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def encodable(text: str) -> bool:
    """Whether ``text`` is valid Unicode (JSON may carry lone surrogates; the OS cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def os_error(path: str, e: OSError) -> ToolError:
    """A system call's failure as a sentence for the model."""
    reasons = {
        errno.ENOENT: "no such file or directory",
        errno.EISDIR: "is a directory",
        errno.ENOTDIR: "a component of the path is not a directory (or is a symbolic link)",
        errno.ELOOP: "refused: it is a symbolic link (tools do not follow links here)",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.ENOSPC: "no space left on the device",
        errno.EFBIG: "file too large for this system",
        errno.ENAMETOOLONG: "the name is too long",
        errno.ENXIO: "not a regular file (no reader on the other end)",
    }
    reason = reasons.get(e.errno or 0, e.strerror or str(e))
    return ToolError(f"{path}: {reason}")


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """What a tool call gives back: the text for ``tool_result`` and whether it is an error.

    ``end`` is set by ``report_blocker`` ("blocked", ``text`` is the reason) and ``finish``
    ("finished", ``text`` is the summary): the caller ends its loop.
    """

    text: str
    is_error: bool = False
    end: Literal["blocked", "finished"] | None = None
