"""Whether a preset's program is installed, and where.

A program is looked up on PATH, as for command agents; when ``claude`` is not there, the
binary bundled in the ``claude-agent-sdk`` wheel (the ``claude-code`` extra) is used.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from orchestrator.agents.command import missing_program
from orchestrator.agents.presets.table import preset_for
from orchestrator.plan.model import Task


@functools.cache
def bundled_claude() -> str | None:
    """The Claude Code binary inside the installed claude-agent-sdk wheel, if any.

    Found without importing the package (which pulls in an MCP server stack).
    """
    try:
        spec = importlib.util.find_spec("claude_agent_sdk")
    except (ImportError, ValueError):
        return None
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(root) / "_bundled" / "claude"
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


def locate_program(program: str, *, path: str | None = None) -> str | None:
    """Where ``program`` (no slash in it) is on ``path``; ``claude`` also in the SDK wheel."""
    found = shutil.which(program, path=path)
    if found is None and program == "claude":
        found = bundled_claude()
    return found


def missing_preset_program(
    task: Task,
    *,
    presets: Sequence[tuple[str, Sequence[str]]] = (),
    path: str | None = None,
    workspace: Path | None = None,
) -> tuple[str, str] | None:
    """``(program, install hint)`` when ``task``'s preset program is not installed, else None.

    ``presets`` are the plan's template overrides; ``path`` and ``workspace`` as for
    `orchestrator.agents.command.missing_program`.
    """
    preset = preset_for(task.agent, presets)
    program = preset.argv[0] if preset.argv else ""
    if program == "claude" and locate_program(program, path=path) is not None:
        return None
    as_command = replace(task, agent="command", command=preset.argv, shell=False)
    missing = missing_program(as_command, path=path, workspace=workspace)
    return None if missing is None else (missing, preset.install_hint)
