"""Claude Code's ``stream-json`` output turned into agent events, one line at a time (pure).

``claude -p --output-format stream-json --verbose`` prints one JSON object a line. The shapes
below are those of Claude Code 2.1.330 (the binary in claude-agent-sdk 0.2.187), recorded
against the local fake Messages API (``tests/fakes/streams/``):

- ``system``/``init`` first (``cwd``, ``model``, ``permissionMode``, ``tools``,
  ``claude_code_version``); later ``system`` lines are ``api_retry`` (``attempt``,
  ``max_retries``, ``retry_delay_ms``, ``error_status``, ``error``), ``permission_denied``,
  ``task_started``, ``task_notification``, ...;
- ``assistant``: ``message.content`` holds one block a line (``text``, ``tool_use`` with
  ``id``/``name``/``input``, ``thinking``);
- ``user``: ``message.content`` holds ``tool_result`` blocks (``tool_use_id``, ``content`` as
  a string or a list of text blocks, ``is_error``);
- ``result`` last: ``subtype`` (``success``, ``error_max_turns``, ``error_max_budget_usd``,
  ``error_during_execution``), ``is_error``, ``num_turns``, ``duration_ms``,
  ``total_cost_usd``, ``usage``, ``modelUsage`` (per model, subagents included), ``result``
  (the final text, absent on errors), ``errors``, ``api_error_status``. A refused API
  request (401, 400, ...) ends with ``subtype: success`` and ``is_error: true``.

They become the events API agents emit, so progress files, status, budgets and REPORT.md
read alike: text blocks `Text`, tool uses `ToolCall`, tool results `ToolResult` (truncated),
the result one `Usage` (its ``total_cost_usd``, charged to the run's budget) unless the
child's requests are ``metered`` by the model gateway (which emits their usage itself; the
child's own figure is then only shown), and the terminal event: `Finished` with the final
text, `Failed` when ``is_error``, `Blocked` when a text line (or the final text) says
``BLOCKED: <reason>``, and `Blocked` of kind ``permission`` when the result lists
``permission_denials``: a run that was refused tool calls never passes for a success. The
init and retry lines become `Output` lines; the other ``system`` lines and unknown types are
dropped. A line that is not a JSON object is kept as raw `Output`: nothing a child prints is
fatal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from orchestrator.agents.output import blocked_reason, outcome
from orchestrator.events import (
    AgentEvent,
    Blocked,
    Failed,
    FailureKind,
    Finished,
    Output,
    Text,
    ToolCall,
    ToolResult,
    Usage,
)
from orchestrator.process.lines import Stream

SUMMARY_CHARS = 160
"""Width of a tool call's or tool result's one-line summary."""
FINAL_CHARS = 2000
"""Characters of the final text kept as the `Finished` summary (as the claude agent does)."""
RAW_CHARS = 2000
"""A line that does not parse is kept up to this many characters."""
DENIALS_SHOWN = 10
"""Denied tool calls listed in a permission blocker (the rest are counted)."""

_PATH_KEYS = ("file_path", "notebook_path", "path")
_COMMAND_TOOLS = frozenset({"Bash", "PowerShell"})
_SUMMARY_KEYS = ("command", "pattern", "url", "query", "description", "prompt", "skill")


@dataclass(slots=True)
class StreamJsonParser:
    """Feed it every output line of one child run; ``finish`` it with the exit code.

    Holds what later lines need: tool names by ``tool_use_id``, the working directory (tool
    paths are shown relative to it), the cost already reported and the terminal event.
    """

    metered: bool = False
    cwd: str = ""
    terminal: AgentEvent | None = None
    cost_reported: float = 0.0
    results: int = 0
    last_stderr: str = ""
    last_text: str = ""
    _tools: dict[str, str] = field(default_factory=dict)

    def feed(self, stream: Stream, line: str) -> list[AgentEvent]:
        """The events of one output line (often none, never an exception)."""
        if stream == "stderr":
            if line.strip():
                self.last_stderr = line.strip()
            return [Output(line, "stderr"), *self._blocked_in(line)]
        message = _json_object(line)
        if message is None:
            return self._raw(line)
        kind = message.get("type")
        if kind == "assistant":
            events = self._assistant(message)
        elif kind == "user":
            events = self._user(message)
        elif kind == "result":
            events = self._result(message)
        elif kind == "system":
            events = self._system(message)
        elif isinstance(kind, str):
            return []  # stream_event, rate limit notes, types of later versions
        else:
            return self._raw(line)
        return self._raw(line) if events is None else events

    def finish(self, code: int) -> list[AgentEvent]:
        """The terminal event when the stream never gave one (the child died, or crashed)."""
        if self.terminal is not None:
            return []
        if code == 0:
            event: AgentEvent = Failed("claude-code exited without a result message")
        else:
            event = outcome(code)
            if isinstance(event, Failed) and self.last_stderr:
                event = Failed(f"{event.error}: {_short(self.last_stderr)}", kind=event.kind)
        self.terminal = event
        return [event]

    # --- one kind of line each; None means "not the shape we know": kept raw --------------

    def _assistant(self, message: dict[str, Any]) -> list[AgentEvent] | None:
        blocks = _blocks(message)
        if blocks is None:
            return None
        events: list[AgentEvent] = []
        for block in blocks:
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                text = block["text"]
                if text.strip():
                    self.last_text = text
                    events.append(Text(text if text.endswith("\n") else text + "\n"))
                    events += self._blocked_in(text)
            elif block.get("type") == "tool_use":
                name = str(block.get("name", "?"))
                self._tools[str(block.get("id", ""))] = name
                events.append(ToolCall(name, self._summarize_input(block.get("input"))))
        return events

    def _user(self, message: dict[str, Any]) -> list[AgentEvent] | None:
        inner = message.get("message")
        if isinstance(inner, dict) and isinstance(inner.get("content"), str):
            return []  # the prompt echoed back
        blocks = _blocks(message)
        if blocks is None:
            return None
        events: list[AgentEvent] = []
        for block in blocks:
            if block.get("type") != "tool_result":
                continue
            name = self._tools.get(str(block.get("tool_use_id", "")), "tool")
            text = _result_text(block.get("content"))
            is_error = bool(block.get("is_error"))
            events.append(ToolResult(name, _summarize_result(name, text), is_error))
        return events

    def _system(self, message: dict[str, Any]) -> list[AgentEvent]:
        subtype = message.get("subtype")
        if subtype == "init":
            cwd = message.get("cwd")
            self.cwd = cwd if isinstance(cwd, str) else ""
            tools = message.get("tools")
            count = len(tools) if isinstance(tools, list) else 0
            line = (
                f"claude-code {message.get('claude_code_version', '?')}: "
                f"model {message.get('model', '?')}, "
                f"permission mode {message.get('permissionMode', '?')}, {count} tools"
            )
            return [Output(line)]
        if subtype == "api_retry":
            delay = _number(message.get("retry_delay_ms")) / 1000
            line = (
                f"api retry {message.get('attempt', '?')}/{message.get('max_retries', '?')} "
                f"in {delay:.1f}s: {message.get('error_status', '')} {message.get('error', '')}"
            )
            return [Output(" ".join(line.split()))]
        return []  # permission_denied (the tool_result repeats it), task_started, ...

    def _result(self, message: dict[str, Any]) -> list[AgentEvent]:
        self.results += 1
        cost = _number(message.get("total_cost_usd"))
        # The cost is the session's running total: a second result reports only the rest.
        spent = max(cost - self.cost_reported, 0.0)
        self.cost_reported = max(cost, self.cost_reported)
        tokens_in, tokens_out = _tokens(message) if self.results == 1 else (0, 0)
        seconds = _number(message.get("duration_ms")) / 1000
        line = (
            f"result: {message.get('subtype', '?')}, {message.get('num_turns', '?')} turns, "
            f"{seconds:.2f}s"
        )
        if self.metered:  # the gateway metered every request: its figure is the record
            events: list[AgentEvent] = [Output(f"{line}; claude-code's own estimate ${cost:.4f}")]
        else:
            events = [Output(line), Usage(tokens_in, tokens_out, spent)]
        if self.terminal is not None:
            return events
        final = message.get("result")
        final_text = final if isinstance(final, str) else ""
        denied = _denials(message.get("permission_denials"))
        if message.get("is_error"):
            self.terminal = Failed(_error_text(message, final_text), kind=_failure_kind(message))
        elif denied:
            self.terminal = Blocked(self._permission_reason(denied), kind="permission")
        else:
            reason = blocked_reason(final_text)
            if reason is not None:
                self.terminal = Blocked(reason)
            else:
                self.terminal = Finished(final_text.strip()[:FINAL_CHARS])
        events.append(self.terminal)
        return events

    # --- helpers that need the parser's state ---------------------------------------------

    def _permission_reason(self, denied: list[dict[str, Any]]) -> str:
        calls = [f"{d.get('tool_name', '?')}({self._summarize_input(d.get('tool_input'))})"
                 for d in denied[:DENIALS_SHOWN]]  # fmt: skip
        more = f" and {len(denied) - DENIALS_SHOWN} more" if len(denied) > DENIALS_SHOWN else ""
        plural = "s" if len(denied) != 1 else ""
        return (
            f"permission: claude-code was denied {len(denied)} tool call{plural}: "
            f"{'; '.join(calls)}{more}"
        )

    def _raw(self, line: str) -> list[AgentEvent]:
        shown = line if len(line) <= RAW_CHARS else line[:RAW_CHARS] + f" …[{len(line)} chars]"
        return [Output(shown), *self._blocked_in(line)]

    def _blocked_in(self, text: str) -> list[AgentEvent]:
        if self.terminal is not None:
            return []
        reason = blocked_reason(text)
        if reason is None:
            return []
        self.terminal = Blocked(reason)
        return [self.terminal]

    def _summarize_input(self, data: object) -> str:
        if not isinstance(data, dict):
            return _short(json.dumps(data, ensure_ascii=False, default=str))
        path = next((data[k] for k in _PATH_KEYS if isinstance(data.get(k), str)), None)
        if path is not None:
            shown = self._relative(path)
            if isinstance(data.get("content"), str):
                return _short(f"{shown} ({len(data['content'])} chars)")
            old, new = data.get("old_string"), data.get("new_string")
            if isinstance(old, str) and isinstance(new, str):
                return _short(f"{shown} (-{len(old)} +{len(new)} chars)")
            return _short(shown)
        key = next((k for k in _SUMMARY_KEYS if isinstance(data.get(k), str)), None)
        if key is not None:
            return _short(str(data[key]))
        return _short(json.dumps(data, ensure_ascii=False, default=str))

    def _relative(self, path: str) -> str:
        prefix = self.cwd.rstrip("/") + "/"
        return path[len(prefix) :] if self.cwd and path.startswith(prefix) else path


# --- pure helpers -------------------------------------------------------------------------------


def _json_object(line: str) -> dict[str, Any] | None:
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]] | None:
    inner = message.get("message")
    content = inner.get("content") if isinstance(inner, dict) else None
    if not isinstance(content, list):
        return None
    return [b for b in content if isinstance(b, dict)]


def _denials(value: object) -> list[dict[str, Any]]:
    """The result's ``permission_denials`` (each ``tool_name``, ``tool_input``...)."""
    return [d for d in value if isinstance(d, dict)] if isinstance(value, list) else []


def _result_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            str(b.get("text", "")) if b.get("type") == "text" else f"[{b.get('type', '?')}]"
            for b in content
            if isinstance(b, dict)
        ]
        return "\n".join(parts)
    return "" if content is None else json.dumps(content, ensure_ascii=False, default=str)


def _summarize_result(name: str, text: str) -> str:
    """One line, as the claude agent renders its tools: a command's last line (its status:
    ``3 passed``, an exit code), otherwise the first and how many more there were."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return "(empty)"
    if name in _COMMAND_TOOLS:
        return _short(lines[-1])
    more = f" (+{len(lines) - 1} lines)" if len(lines) > 1 else ""
    return _short(lines[0]) + more


def _tokens(message: dict[str, Any]) -> tuple[int, int]:
    """Input (cache reads and writes included) and output tokens of the whole run.

    ``modelUsage`` counts every model the run used (subagents and side requests too) and
    is right even when ``usage`` is zeroed, as it is after ``error_max_budget_usd``.
    """
    per_model = message.get("modelUsage")
    if isinstance(per_model, dict) and per_model:
        models = [m for m in per_model.values() if isinstance(m, dict)]
        keys_in = ("inputTokens", "cacheReadInputTokens", "cacheCreationInputTokens")
        tokens_in = sum(int(_number(m.get(k))) for m in models for k in keys_in)
        return tokens_in, sum(int(_number(m.get("outputTokens"))) for m in models)
    usage = message.get("usage")
    if not isinstance(usage, dict):
        return 0, 0
    keys = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    return sum(int(_number(usage.get(k))) for k in keys), int(_number(usage.get("output_tokens")))


def _failure_kind(message: dict[str, Any]) -> FailureKind:
    subtype = message.get("subtype")
    if subtype == "error_max_turns":
        return "max_turns"
    if subtype == "error_max_budget_usd":
        return "budget"
    status = message.get("api_error_status")
    if status in (401, 403):
        return "config"  # a key or a permission: no fixer can mend it
    if isinstance(status, int):
        return "provider"
    return "error"


def _error_text(message: dict[str, Any], final_text: str) -> str:
    errors = message.get("errors")
    text = final_text.strip()
    if not text and isinstance(errors, list):
        text = "; ".join(str(e) for e in errors if e)
    text = text or str(message.get("subtype", "error"))
    status = message.get("api_error_status")
    return f"{text} (HTTP {status})" if isinstance(status, int) else text


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value)


def _short(text: str, limit: int = SUMMARY_CHARS) -> str:
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 1] + "…"
