"""A short, bounded look at a workspace for the model that drafts a plan: its file tree, its
README and the build command its files suggest.

Bounded in every direction (entries listed, depth, bytes read), so a huge repository costs
the same as a small one; directories nobody writes by hand (.git, virtualenvs, caches,
node_modules) are skipped. Synchronous: callers in async code run it in a thread.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

MAX_ENTRIES = 200
MAX_DEPTH = 3
README_CHARS = 4000
SKIP = frozenset({
    ".git", ".hg", ".svn", ".venv", "venv", "env", "node_modules", "__pycache__", ".mypy_cache",
    ".pytest_cache", ".ruff_cache", ".tox", "dist", "build", "target", ".idea", ".vscode",
    "agent-responses",
})  # fmt: skip


@dataclass(frozen=True)
class Survey:
    tree: tuple[str, ...]
    more: int
    """Entries left out past `MAX_ENTRIES`."""
    readme: str
    build: str | None
    """The build command the files suggest, or None."""

    def text(self) -> str:
        """The survey as the model reads it."""
        tree = "\n".join(self.tree) or "(empty)"
        if self.more:
            tree += f"\n... and {self.more} more entries"
        parts = [f"Files (up to depth {MAX_DEPTH}):\n{tree}"]
        if self.readme:
            parts.append(f"README (start):\n{self.readme}")
        parts.append(f"Build command inferred: {self.build or '(none found)'}")
        return "\n\n".join(parts)


def survey(workspace: Path) -> Survey:
    tree: list[str] = []
    more = 0
    todo: list[tuple[Path, int]] = [(workspace, 0)]
    while todo:
        folder, depth = todo.pop(0)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if entry.name in SKIP or entry.name.endswith(".egg-info"):
                continue
            is_dir = entry.is_dir(follow_symlinks=False)
            if len(tree) >= MAX_ENTRIES:
                more += 1
                continue
            rel = os.path.relpath(entry.path, workspace)
            tree.append(rel + ("/" if is_dir else ""))
            if is_dir and depth + 1 < MAX_DEPTH:
                todo.append((Path(entry.path), depth + 1))
    return Survey(tuple(tree), more, _readme(workspace), build_command(workspace))


def _readme(workspace: Path) -> str:
    for name in ("README.md", "README.rst", "README.txt", "README"):
        path = workspace / name
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as fh:
                return fh.read(README_CHARS * 4).decode("utf-8", "replace")[:README_CHARS]
    return ""


def build_command(workspace: Path) -> str | None:
    """The test or build command a project's files name, the most specific first."""
    pyproject = workspace / "pyproject.toml"
    if pyproject.is_file():
        try:
            doc = tomllib.loads(pyproject.read_text("utf-8", "replace")[:200_000])
        except tomllib.TOMLDecodeError:
            doc = {}
        tool = doc.get("tool")
        if (isinstance(tool, dict) and "pytest" in tool) or (workspace / "tests").is_dir():
            return "python -m pytest -q"
        return "python -m compileall -q ."
    package = workspace / "package.json"
    if package.is_file():
        try:
            scripts = json.loads(package.read_text("utf-8", "replace")[:200_000]).get("scripts")
        except (ValueError, AttributeError):
            scripts = None
        if isinstance(scripts, dict):
            for name in ("test", "build"):
                if name in scripts:
                    return f"npm run {name}" if name != "test" else "npm test"
    makefile = workspace / "Makefile"
    if makefile.is_file():
        text = makefile.read_text("utf-8", "replace")[:200_000]
        for target in ("test", "check", "all"):
            if re.search(rf"^{target}\s*:", text, re.MULTILINE):
                return f"make {target}"
    if (workspace / "Cargo.toml").is_file():
        return "cargo test"
    if (workspace / "go.mod").is_file():
        return "go test ./..."
    if (workspace / "setup.py").is_file() or (workspace / "tests").is_dir():
        return "python -m pytest -q"
    return None
