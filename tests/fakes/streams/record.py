#!/usr/bin/env python3
"""Records the ``*.jsonl`` fixtures beside this file from the real Claude Code CLI.

Each scenario runs the binary bundled in claude-agent-sdk (``pip install claude-agent-sdk``)
against `tests.fakeapi` on 127.0.0.1, in a throwaway HOME and in ``/tmp/project`` (so paths
in the recordings are neutral), and saves its stdout. Run it again after a Claude Code
upgrade and compare: ``python tests/fakes/streams/record.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from fakeapi import (  # noqa: E402 - after the path is set
    Reply,
    authentication_error,
    overloaded,
    serve_in_thread,
    text,
    tool_use,
)

sys.path.insert(0, str(HERE.parent.parent.parent))
from orchestrator.agents.presets.program import bundled_claude  # noqa: E402

PROJECT = Path("/tmp/project")
QUIET = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
}


def answered(body: dict[str, Any]) -> bool:
    """Whether the conversation already holds a tool result (the tool ran)."""
    return any(
        isinstance(b, dict) and b.get("type") == "tool_result"
        for m in body.get("messages", [])
        if isinstance(m.get("content"), list)
        for b in m["content"]
    )


def main_request(body: dict[str, Any]) -> bool:
    return any(t.get("name") == "Write" for t in body.get("tools", []))


def writer(body: dict[str, Any], index: int) -> Reply | None:
    if not main_request(body):
        return None
    if not answered(body):
        return tool_use(
            "Write",
            {"file_path": str(PROJECT / "hello.py"), "content": "print('hello')\n"},
            text="I'll create hello.py.",
            input_tokens=1000,
            output_tokens=50,
        )
    return text("Created hello.py, which prints hello.", input_tokens=1200, output_tokens=20)


def bash_denied(body: dict[str, Any], index: int) -> Reply | None:
    if not main_request(body):
        return None
    if not answered(body):
        return tool_use("Bash", {"command": "echo hi; exit 3", "description": "Say hi"})
    return text("The command was not allowed; nothing else to do.")


def blocked(body: dict[str, Any], index: int) -> Reply | None:
    if not main_request(body):
        return None
    return text(
        "I looked for the schema and found none.\n\nBLOCKED: need the users table schema",
        input_tokens=900,
        output_tokens=30,
    )


def retried(body: dict[str, Any], index: int) -> Reply | None:
    if not main_request(body):
        return None
    return overloaded() if index == 0 else text("Done after a retry.")


def refused(body: dict[str, Any], index: int) -> Reply | None:
    return authentication_error()


SCENARIOS: dict[
    str, tuple[Callable[[dict[str, Any], int], Reply | None], list[str], dict[str, str]]
] = {
    "write": (writer, ["--permission-mode", "acceptEdits", "--max-budget-usd", "1"], {}),
    "bash_denied": (bash_denied, ["--permission-mode", "acceptEdits"], {}),
    "max_turns": (writer, ["--permission-mode", "acceptEdits", "--max-turns", "1"], {}),
    "budget": (writer, ["--permission-mode", "acceptEdits", "--max-budget-usd", "0.001"], {}),
    "blocked": (blocked, [], {}),
    "api_retry": (retried, [], {}),
    "auth_error": (refused, [], {"CLAUDE_CODE_MAX_RETRIES": "0"}),
}


def record(name: str, binary: str) -> None:
    responder, flags, extra_env = SCENARIOS[name]
    shutil.rmtree(PROJECT, ignore_errors=True)
    PROJECT.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as home, serve_in_thread(responder, validate=False) as api:
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": home,
            "ANTHROPIC_BASE_URL": api.url,
            "ANTHROPIC_API_KEY": "sk-ant-fixture",
            **QUIET,
            **extra_env,
        }
        argv = [binary, "-p", "--output-format", "stream-json", "--verbose"]
        argv += ["--model", "claude-sonnet-4-5", *flags, "--", "Create hello.py"]
        done = subprocess.run(  # noqa: TID251 - a plain script, no event loop
            argv, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120
        )
    (HERE / f"{name}.jsonl").write_text(done.stdout)
    print(f"{name}: exit {done.returncode}, {len(done.stdout.splitlines())} lines")


def main() -> None:
    binary = os.environ.get("CLAUDE_BINARY") or bundled_claude() or shutil.which("claude")
    if binary is None:
        raise SystemExit("no claude binary: pip install claude-agent-sdk")
    for name in sys.argv[1:] or SCENARIOS:
        record(name, binary)


if __name__ == "__main__":
    main()
