"""What a progress file says, as text: an event's line, a reason in brief, the status line.

Pure functions; `orchestrator.records.progress.ProgressWriter` writes what they return. Text
goes through `clean` before it is written (escapes and control characters out), and a status
line is kept to one line, so no text an agent wrote can forge a ``status:`` line.
"""

from __future__ import annotations

from orchestrator.events import (
    AgentEvent,
    Blocked,
    BuildChecked,
    Failed,
    Finished,
    Output,
    Started,
    Text,
    ToolCall,
    ToolResult,
    Usage,
)
from orchestrator.process.lines import clean_line, one_line

REASON_CHARS = 300
"""A status line carries at most this much of the reason (the whole one is above it)."""


def clean(text: str) -> str:
    """Text safe for a terminal and a file, line by line (newlines are kept)."""
    if "\n" not in text:
        return clean_line(text)
    return "\n".join(clean_line(line) for line in text.split("\n"))


def brief(reason: str) -> str:
    """A reason as a status line carries it: its first line, at most `REASON_CHARS`.

    ``…`` marks what was left out; the whole reason is in the lines above and in the
    ``.events.jsonl``. So the status line never ends in words from a later line of it."""
    lines = [ln for ln in reason.strip().split("\n") if ln.strip()]
    if not lines:
        return ""
    first = one_line(lines[0], REASON_CHARS)
    return first if len(lines) == 1 or first.endswith("…") else first + " …"


def status_line_of(text: str) -> str:
    """The last line of every progress file, after a blank line: ``status: <text>``.

    The one writer of it: `ProgressWriter.finish` for live agents, `end_file` for agents whose
    writer is gone. ``text`` is cleaned and kept to one line, so it cannot forge another."""
    return f"\nstatus: {one_line(text)}\n"


def render(event: AgentEvent) -> str:
    """The human line for one event (without timestamp); Text may hold several lines."""
    match event:
        case Started(detail=detail, pid=pid, node=node):
            where = f" on node {node}" if node else ""
            return f"started: {detail}" + (f" (pid {pid}{where})" if pid else where)
        case Text(text=text):
            return text
        case ToolCall(name=name, summary=summary):
            return f"-> {name}: {summary}"
        case ToolResult(name=name, summary=summary, is_error=is_error):
            return f"<- {name}{' ERROR' if is_error else ''}: {summary}"
        case Output(line=line, stream=stream):
            return output_mark(stream) + line
        case Blocked(reason=reason):
            return f"BLOCKED: {reason}"
        case Usage(tokens_in=tin, tokens_out=tout, cost_usd=cost):
            return f"usage: {tin} in / {tout} out tokens, ${cost:.4f}"
        case Finished(summary=summary):
            return f"finished: {summary}" if summary else "finished"
        case Failed(error=error, kind=kind):
            return f"failed ({kind}): {error}"
        case BuildChecked(exit_code=code, command=command):
            return f"check: `{command}` exited {code}"


def output_mark(stream: str) -> str:
    """What starts a line a program printed: ``| `` on stdout, ``! `` on stderr."""
    return "| " if stream == "stdout" else "! "
