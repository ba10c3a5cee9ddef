"""The tools as the model sees them: their schemas, the checks on its arguments, dispatch.

`dispatch` never raises for the model's mistakes: unknown tools, bad arguments, refusals
(`ToolError`) and failed system calls all come back as error results it can read. File tools
run in ``asyncio.to_thread``, one hop per call.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from orchestrator.process.lines import Stream
from orchestrator.sandbox.confinement import Confinement
from orchestrator.tools.files import (
    READ_DEFAULT_LINES,
    edit_file,
    list_files,
    read_file,
    search,
    write_file,
)
from orchestrator.tools.shell import run_command
from orchestrator.tools.workspace import ToolError, ToolOutcome, Workspace


def _spec(
    name: str, description: str, props: dict[str, Any], required: list[str]
) -> dict[str, Any]:
    schema = {"type": "object", "properties": props, "required": required}
    return {"name": name, "description": description, "input_schema": schema}


_PATH = {"type": "string", "description": "Path relative to the workspace root."}

TOOL_SPECS: list[dict[str, Any]] = [
    _spec(
        "read_file",
        "Read a text file in the workspace. Returns up to `limit` lines from line `offset` "
        "(counted from 1); a note at the end says how to read more.",
        {
            "path": _PATH,
            "offset": {"type": "integer", "minimum": 1, "description": "First line, from 1."},
            "limit": {"type": "integer", "minimum": 1, "description": "Lines to return."},
        },
        ["path"],
    ),
    _spec(
        "write_file",
        "Create or overwrite a file in the workspace with `content`; missing parent "
        "directories are created. Paths outside the workspace, symlinks leading outside, "
        "the responses directory and .git/hooks, .git/config are refused.",
        {"path": _PATH, "content": {"type": "string", "description": "The whole new content."}},
        ["path", "content"],
    ),
    _spec(
        "edit_file",
        "Replace exactly one occurrence of `old` with `new` in a file. `old` must match the "
        "file exactly (whitespace included) and appear once; add surrounding lines if not.",
        {
            "path": _PATH,
            "old": {"type": "string", "description": "Exact text to replace."},
            "new": {"type": "string", "description": "Replacement text."},
        },
        ["path", "old", "new"],
    ),
    _spec(
        "list_files",
        "List files in the workspace whose path matches a glob (`*`, `?`, `[...]`, `**` for "
        "any depth), e.g. `**/*.py` or `src/*`. Default: every file. .git is not listed.",
        {"pattern": {"type": "string", "description": "Glob relative to the workspace root."}},
        [],
    ),
    _spec(
        "search",
        "Search text files in the workspace for a regular expression (RE2: Python's syntax "
        "without backreferences or look-around); returns `path:line: text` lines. Binary and "
        "very large files are skipped.",
        {
            "regex": {"type": "string", "description": "RE2 regular expression."},
            "glob": {"type": "string", "description": "Only files matching this glob."},
        },
        ["regex"],
    ),
    _spec(
        "run_command",
        "Run a bash command in the workspace root (tests, builds, git). Output (stdout and "
        "stderr) is capped around 30 KB, keeping the beginning and the end. The command is "
        "stopped, with its children, when the timeout passes.",
        {
            "command": {"type": "string", "description": "The bash command line."},
            "timeout": {"type": "number", "minimum": 1, "description": "Seconds (capped)."},
        },
        ["command"],
    ),
    _spec(
        "add_task",
        "Add a task to this run for another agent (the orchestrator starts it when its "
        "dependencies have succeeded): for follow-up work you discovered, or to split a task "
        "that turned out too big. It is checked like a plan and against the run's limits "
        "(agents, depth, budget, rate); a refusal says which rule, and you carry on.",
        {
            "id": {"type": "string", "description": "A new task id (letters, digits, . _ -)."},
            "prompt": {"type": "string", "description": "What the new task's agent is to do."},
            "kind": {"type": "string", "description": "Agent kind (default: yours)."},
            "depends_on": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Ids of existing tasks it waits for.",
            },
        },
        ["id", "prompt"],
    ),
    _spec(
        "report_blocker",
        "Stop working because something outside your control prevents the task (missing "
        "information, a broken dependency, a contradiction). Say exactly what is needed.",
        {"reason": {"type": "string", "description": "What blocks you and what would unblock."}},
        ["reason"],
    ),
    _spec(
        "finish",
        "Declare the task done. Call it once, after checking your work.",
        {"summary": {"type": "string", "description": "What you changed, in a few lines."}},
        ["summary"],
    ),
]
_SPECS_BY_NAME = {spec["name"]: spec for spec in TOOL_SPECS}
_TYPES: dict[str, Callable[[object], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "array": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
}
AddTask = Callable[[Mapping[str, object]], dict[str, Any] | Awaitable[dict[str, Any]]]
"""The run's answer to an addition (`orchestrator.engine.growth.answer`, for this agent), or
an awaitable of it (an agent on a cluster node: its host relays the request to the driver)."""


def check_args(name: str, args: object) -> dict[str, Any]:
    """``args`` checked against the tool's input schema, or `ToolError` saying what is wrong."""
    spec = _SPECS_BY_NAME.get(name)
    if spec is None:
        known = ", ".join(_SPECS_BY_NAME)
        raise ToolError(f"unknown tool {name!r}; the tools are: {known}")
    if not isinstance(args, dict):
        raise ToolError(f"{name}: the input must be a JSON object")
    schema = spec["input_schema"]
    props: dict[str, Any] = schema["properties"]
    missing = [k for k in schema["required"] if k not in args]
    if missing:
        raise ToolError(f"{name}: missing required argument(s): {', '.join(missing)}")
    for key, value in args.items():
        prop = props.get(key)
        if prop is None:
            raise ToolError(f"{name}: unexpected argument {key!r}; expected: {', '.join(props)}")
        if not _TYPES[prop["type"]](value):
            raise ToolError(f"{name}: argument {key!r} must be a {prop['type']}")
        if "minimum" in prop and value < prop["minimum"]:
            raise ToolError(f"{name}: argument {key!r} must be at least {prop['minimum']}")
    return dict(args)


async def dispatch(
    ws: Workspace,
    name: str,
    args: object,
    *,
    env: Mapping[str, str],
    timeout: float,  # noqa: ASYNC109 - bounds run_command only; a timeout is a result there
    on_output: Callable[[Stream, str], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    on_activity: Callable[[], None] | None = None,
    sandbox: Confinement | None = None,
    add_task: AddTask | None = None,
) -> ToolOutcome:
    """Run the tool the model asked for; its mistakes come back as ``is_error`` results.

    ``timeout`` bounds ``run_command`` (the model may ask for less, never more). Bugs in
    this module still raise; cancellation passes through.
    """
    try:
        a = check_args(name, args)
        match name:
            case "read_file":
                text = await asyncio.to_thread(
                    read_file,
                    ws,
                    a["path"],
                    offset=a.get("offset", 1),
                    limit=a.get("limit", READ_DEFAULT_LINES),
                )
            case "write_file":
                text = await asyncio.to_thread(write_file, ws, a["path"], a["content"])
            case "edit_file":
                text = await asyncio.to_thread(edit_file, ws, a["path"], a["old"], a["new"])
            case "list_files":
                text = await asyncio.to_thread(list_files, ws, a.get("pattern", "**/*"))
            case "search":
                text = await asyncio.to_thread(search, ws, a["regex"], a.get("glob", "**/*"))
            case "run_command":
                limit = min(float(a.get("timeout", timeout)), timeout)
                return await run_command(
                    ws,
                    a["command"],
                    env=env,
                    timeout=limit,
                    on_output=on_output,
                    on_start=on_start,
                    on_activity=on_activity,
                    sandbox=sandbox,
                )
            case "add_task":
                if add_task is None:
                    raise ToolError("add_task: this agent cannot add tasks to its run")
                answer = add_task(a)
                if inspect.isawaitable(answer):
                    answer = await answer
                return ToolOutcome(json.dumps(answer), is_error=not answer.get("ok"))
            case "report_blocker":
                return _ending(a["reason"], "blocked", "reason")
            case "finish":
                return _ending(a["summary"], "finished", "summary")
            case _:  # pragma: no cover - check_args knows every name
                raise ToolError(f"unknown tool {name!r}")
    except ToolError as e:
        return ToolOutcome(str(e), is_error=True)
    return ToolOutcome(text)


def _ending(text: str, end: Literal["blocked", "finished"], what: str) -> ToolOutcome:
    if not text.strip():
        raise ToolError(f"the {what} must not be empty")
    return ToolOutcome(text.strip(), end=end)
