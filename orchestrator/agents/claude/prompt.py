"""The text of a claude attempt: what the model is told, and how its tool traffic is shown.

Pure functions over plain data; no ``anthropic`` here (`orchestrator.agents.claude.agent` is the
only module that imports it). The model is told two cached system blocks, the instructions
every agent of the run shares then its own task (`system_blocks`); the tools are
`orchestrator.tools.calls.TOOL_SPECS` (`tool_params`); the conversation carries a cache breakpoint
on its last block (`request_messages`). What the progress file shows of a tool call is one
short line each way (`summarize_input`, `summarize_result`), and every event's text has the
API key and token masked (`masked`, with the values from `secret_values`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from orchestrator.agents.base import AgentContext
from orchestrator.tools.calls import TOOL_SPECS

SUMMARY_CHARS = 160
EPHEMERAL: dict[str, str] = {"type": "ephemeral"}

INSTRUCTIONS = """\
You are a coding agent. An orchestrator runs you, with other agents, from a plan; you work on \
one task inside one workspace directory. Other agents may work in the same workspace at the \
same time on other tasks: change only what your task needs.

Tools: read_file, list_files and search to look around; write_file and edit_file to change \
files; run_command to run tests, builds and other commands with bash in the workspace root. \
Paths are relative to the workspace root. Paths outside it, symbolic links that lead out of \
it, .git/hooks, .git/config and the orchestrator's responses directory are refused.

Work until the task is done, check your work (run the tests if there are any), then call \
`finish` with a short summary of what you changed. If something outside your control \
prevents the task (missing information, a broken dependency, a contradiction in the task), \
do not guess and do not work around it: call `report_blocker`, saying exactly what is \
missing and what would unblock you; another agent may be sent to fix it. Either call ends \
your work on this task.

Be economical: read only what you need, prefer edit_file to rewriting whole files, and keep \
your messages short."""

START = "Start on the task described in the system prompt. Call `finish` when it is done."
CUT_OFF = (
    "Your last reply was cut off at the {} token limit before it was complete, so none of its "
    "tool calls were run. Continue in smaller steps (write a large file in several parts)."
)


# --- what the model is told -------------------------------------------------------------------


def system_blocks(ctx: AgentContext) -> list[dict[str, Any]]:
    """Two cached blocks: instructions shared by every agent of the run, then this task."""
    task = ctx.task
    notes = "\n".join(f"- {n}" for n in ctx.context_notes) or "(this task depends on no other)"
    task_text = "\n".join(
        [
            f"# Your task: {task.id} (attempt {ctx.attempt}, agent {ctx.agent_id})",
            "",
            ctx.prompt.strip(),
            "",
            "# Workspace",
            "",
            f"{ctx.workspace} (your tools work relative to it)",
            "",
            "# What the tasks this one depends on produced",
            "",
            notes,
            "",
            "# Limits",
            "",
            f"You have at most {task.max_turns} replies; each may call several tools.",
        ]
    )
    return [
        {"type": "text", "text": INSTRUCTIONS, "cache_control": EPHEMERAL},
        {"type": "text", "text": task_text, "cache_control": EPHEMERAL},
    ]


def tool_params() -> list[dict[str, Any]]:
    """The tool specs, with a cache breakpoint after the last one (shared by the whole run)."""
    tools = [dict(spec) for spec in TOOL_SPECS]
    tools[-1] = {**tools[-1], "cache_control": EPHEMERAL}
    return tools


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def request_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation, with a cache breakpoint on its last block (incremental caching:
    the next turn reads everything up to here from the cache)."""
    *head, last = messages
    blocks = [*last["content"][:-1], {**last["content"][-1], "cache_control": EPHEMERAL}]
    return [*head, {"role": last["role"], "content": blocks}]


# --- what the progress file shows -------------------------------------------------------------


def summarize_input(name: str, args: object) -> str:
    """A short rendering of a tool call's input for the progress file."""
    a: Mapping[str, Any] = args if isinstance(args, dict) else {}

    def s(key: str) -> str:
        return str(a.get(key, ""))

    match name:
        case "read_file":
            extra = f" from line {a['offset']}" if "offset" in a else ""
            return _short(s("path") + extra)
        case "write_file":
            return _short(f"{s('path')} ({len(s('content'))} chars)")
        case "edit_file":
            return _short(f"{s('path')} (-{len(s('old'))} +{len(s('new'))} chars)")
        case "list_files":
            return _short(s("pattern") or "**/*")
        case "search":
            return _short(f"/{s('regex')}/ in {s('glob') or '**/*'}")
        case "run_command":
            return _short(s("command"))
        case "add_task":
            return _short(f"{s('id')}: {s('prompt')}")
        case "report_blocker":
            return _short(s("reason"))
        case "finish":
            return _short(s("summary"))
        case _:
            return _short(json.dumps(args, ensure_ascii=False, default=str))


def summarize_result(name: str, text: str) -> str:
    """A tool result in one line: the status line of a command, the first line otherwise."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return "(empty)"
    line = lines[-1] if name == "run_command" else lines[0]
    more = f" (+{len(lines) - 1} lines)" if len(lines) > 1 and name != "run_command" else ""
    return _short(line) + more


def _short(text: str, limit: int = SUMMARY_CHARS) -> str:
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 1] + "…"
