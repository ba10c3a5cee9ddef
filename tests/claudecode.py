"""The real Claude Code CLI in tests: where it is, how to keep it offline and quiet, and how a
fake Messages API tells its agent loop's requests from its side requests.

The binary is the one bundled in the ``claude-agent-sdk`` wheel (the ``claude-code`` extra),
or ``claude`` on PATH; tests that need it skip without it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from orchestrator.agents.presets.program import bundled_claude


def real_claude() -> str | None:
    return shutil.which("claude") or bundled_claude()


needs_real_claude = pytest.mark.skipif(
    real_claude() is None,
    reason="the claude-code extra is not installed (pip install claude-agent-sdk bundles the CLI)",
)

QUIET_ENV = (
    ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
    ("DISABLE_AUTOUPDATER", "1"),
    ("DISABLE_TELEMETRY", "1"),
    ("DISABLE_ERROR_REPORTING", "1"),
    ("CLAUDE_CODE_MAX_RETRIES", "0"),
)


def home_env(home: Path) -> tuple[tuple[str, str], ...]:
    """A task ``env`` that keeps Claude Code's config and scratch files under ``home``."""
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return (
        ("HOME", str(home)),
        # Claude Code keeps Bash task output in $CLAUDE_CODE_TMPDIR/claude-<uid> (default /tmp).
        ("CLAUDE_CODE_TMPDIR", str(home / "tmp")),
        ("TMPDIR", str(home / "tmp")),
        *QUIET_ENV,
    )


def conversation_has_tool_result(body: dict[str, Any]) -> bool:
    return tool_results(body) > 0


def tool_results(body: dict[str, Any]) -> int:
    """How many tool results the conversation holds (the turns already taken)."""
    return sum(
        1
        for m in body.get("messages", [])
        if isinstance(m.get("content"), list)
        for b in m["content"]
        if isinstance(b, dict) and b.get("type") == "tool_result"
    )


def is_main_request(body: dict[str, Any]) -> bool:
    """The agent loop's requests carry the tools; side requests (titles, checks) do not."""
    return any(t.get("name") == "Write" for t in body.get("tools", []))
