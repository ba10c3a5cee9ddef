"""Claude Code stream-json to agent events: recorded real streams in, the API agents' events out.

The fixtures in ``tests/fakes/streams`` were recorded from Claude Code 2.1.330 against the fake
Messages API (``tests/fakes/streams/record.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.agents.presets.streamjson import StreamJsonParser
from orchestrator.events import (
    AgentEvent,
    Blocked,
    Failed,
    Finished,
    Output,
    Text,
    ToolCall,
    ToolResult,
    Usage,
)

STREAMS = Path(__file__).resolve().parents[2] / "fakes" / "streams"


def replay(name: str, *, code: int = 0) -> list[AgentEvent]:
    parser = StreamJsonParser()
    events: list[AgentEvent] = []
    for line in (STREAMS / f"{name}.jsonl").read_text().splitlines():
        events += parser.feed("stdout", line)
    return events + parser.finish(code)


def feed(*lines: str | dict[str, object], code: int = 0) -> list[AgentEvent]:
    parser = StreamJsonParser()
    events: list[AgentEvent] = []
    for line in lines:
        events += parser.feed("stdout", line if isinstance(line, str) else json.dumps(line))
    return events + parser.finish(code)


def result(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "num_turns": 1,
        "duration_ms": 10,
        "total_cost_usd": 0.01,
        "usage": {"input_tokens": 10, "output_tokens": 5},
        "result": "done",
    }
    return {**base, **fields}


def assistant(*blocks: dict[str, object]) -> dict[str, object]:
    return {"type": "assistant", "message": {"content": list(blocks)}}


# --- recorded streams -------------------------------------------------------------------------


def test_a_successful_run_reads_like_an_api_agent() -> None:
    assert replay("write") == [
        Output(
            "claude-code 2.1.330: model claude-sonnet-4-5, permission mode acceptEdits, 26 tools"
        ),
        Text("I'll create hello.py.\n"),
        ToolCall("Write", "hello.py (15 chars)"),
        ToolResult(
            "Write",
            "File created successfully at: /tmp/project/hello.py (file state is current in your "
            "context — no need to Read it back)",
        ),
        Text("Created hello.py, which prints hello.\n"),
        Output("result: success, 2 turns, 0.32s"),
        Usage(tokens_in=2200, tokens_out=70, cost_usd=0.00765),
        Finished("Created hello.py, which prints hello."),
    ]


def test_a_denied_tool_call_blocks_the_attempt_with_kind_permission() -> None:
    events = replay("bash_denied")
    assert ToolCall("Bash", "echo hi; exit 3") in events
    denied = [e for e in events if isinstance(e, ToolResult)]
    assert denied == [
        ToolResult(
            "Bash",
            "This Bash command contains multiple operations. The following part requires "
            "approval: exit 3",
            is_error=True,
        )
    ]
    # The model said it was done, but a call was refused: never a silent success.
    assert events[-1] == Blocked(
        "permission: claude-code was denied 1 tool call: Bash(echo hi; exit 3)", kind="permission"
    )


def test_with_the_gateway_metering_the_result_cost_is_only_shown() -> None:
    parser = StreamJsonParser(metered=True)
    events = [e for line in (STREAMS / "write.jsonl").read_text().splitlines()
              for e in parser.feed("stdout", line)]  # fmt: skip
    assert not [e for e in events if isinstance(e, Usage)]
    assert any(isinstance(e, Output) and "own estimate $0.0076" in e.line for e in events)
    assert isinstance(events[-1], Finished)


@pytest.mark.parametrize(
    ("name", "terminal"),
    [
        ("max_turns", Failed("Reached maximum number of turns (1)", kind="max_turns")),
        ("budget", Failed("Reached maximum budget ($0.001)", kind="budget")),
        ("auth_error", Failed("Invalid API key · Fix external API key (HTTP 401)", kind="config")),
        ("blocked", Blocked("need the users table schema")),
        ("api_retry", Finished("Done after a retry.")),
    ],
)
def test_each_recorded_ending_gives_its_terminal_event(name: str, terminal: AgentEvent) -> None:
    events = replay(name, code=0 if isinstance(terminal, Finished | Blocked) else 1)
    ends = [e for e in events if isinstance(e, Finished | Failed | Blocked)]
    assert ends == [terminal]


@pytest.mark.parametrize(
    "name", ["write", "bash_denied", "max_turns", "budget", "auth_error", "blocked", "api_retry"]
)
def test_every_run_reports_exactly_one_usage_with_its_total_cost(name: str) -> None:
    lines = (STREAMS / f"{name}.jsonl").read_text().splitlines()
    total = json.loads(lines[-1])["total_cost_usd"]
    usages = [e for e in replay(name) if isinstance(e, Usage)]
    assert len(usages) == 1
    assert usages[0].cost_usd == total


def test_tokens_come_from_model_usage_when_the_budget_stop_zeroes_usage() -> None:
    usage = next(e for e in replay("budget") if isinstance(e, Usage))
    assert usage == Usage(tokens_in=1000, tokens_out=50, cost_usd=0.00375)


def test_retries_show_as_output_lines() -> None:
    retry = [e for e in replay("api_retry") if isinstance(e, Output) and "retry" in e.line]
    assert len(retry) == 1
    assert retry[0].line.startswith("api retry 1/10 in ")
    assert retry[0].line.endswith(": 529 overloaded")


def test_a_blocker_is_reported_as_soon_as_the_text_says_it_and_only_once() -> None:
    events = replay("blocked")
    assert isinstance(events[1], Text)
    assert events[2] == Blocked("need the users table schema")
    assert [e for e in events if isinstance(e, Blocked)] == [events[2]]
    assert not any(isinstance(e, Finished) for e in events)


# --- what does not parse ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "plain text",
        '{"type": "assistant", "message": {"content": [{"type": "text", "text": "cut',
        "[1, 2, 3]",
        "{not json}",
        '{"no_type": true}',
        '{"type": "assistant", "message": "not an object"}',
        '{"type": "user", "message": {"content": 7}}',
        "",
    ],
)
def test_lines_that_do_not_parse_are_kept_as_raw_output(line: str) -> None:
    assert StreamJsonParser().feed("stdout", line) == [Output(line)]


def test_unknown_message_types_and_quiet_system_lines_are_dropped() -> None:
    parser = StreamJsonParser()
    assert parser.feed("stdout", '{"type": "stream_event", "event": {}}') == []
    assert parser.feed("stdout", '{"type": "system", "subtype": "task_started"}') == []
    assert parser.feed("stdout", '{"type": "system", "subtype": "permission_denied"}') == []


def test_a_huge_unparsed_line_is_shortened() -> None:
    (event,) = StreamJsonParser().feed("stdout", "x" * 10_000)
    assert isinstance(event, Output)
    assert event.line.endswith(" …[10000 chars]")
    assert len(event.line) < 2100


def test_wrong_field_types_never_raise() -> None:
    events = feed(
        assistant({"type": "tool_use", "id": 5, "name": None, "input": [1, 2]}),
        {"type": "user", "message": {"content": [{"type": "tool_result", "content": {"a": 1}}]}},
        result(total_cost_usd="lots", usage="none", duration_ms=None, result=None),
    )
    assert ToolCall("None", "[1, 2]") in events
    assert ToolResult("tool", '{"a": 1}') in events
    assert Usage(0, 0, 0.0) in events
    assert events[-1] == Finished("")


# --- endings without a result -------------------------------------------------------------------


def test_a_stream_without_result_fails_with_the_exit_code_and_last_stderr_line() -> None:
    parser = StreamJsonParser()
    parser.feed("stderr", "error: unknown option '-x'")
    assert parser.finish(1) == [Failed("exit code 1: error: unknown option '-x'")]


def test_a_clean_exit_without_result_is_a_failure() -> None:
    assert feed(code=0) == [Failed("claude-code exited without a result message")]


def test_a_killed_child_fails_with_the_signal() -> None:
    assert feed(code=-9) == [Failed("killed by signal 9 (SIGKILL)")]


def test_finish_adds_nothing_once_the_result_decided() -> None:
    parser = StreamJsonParser()
    parser.feed("stdout", json.dumps(result()))
    assert parser.finish(1) == []


def test_a_second_result_reports_only_the_cost_added_since_the_first() -> None:
    usages = [
        e
        for e in feed(result(total_cost_usd=0.25), result(total_cost_usd=0.75))
        if isinstance(e, Usage)
    ]
    assert usages == [Usage(10, 5, 0.25), Usage(0, 0, 0.5)]


# --- blockers and summaries ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("BLOCKED: need the schema", "need the schema"),
        ("Looked around.\n\n**BLOCKED:** need the schema", "need the schema"),
        ("> BLOCKED: need the schema", "need the schema"),
        ("  BLOCKED:", "(no reason given)"),
        ("I am not BLOCKED: just slow", None),
        ("UNBLOCKED: fine", None),
    ],
)
def test_blocked_lines(text: str, reason: str | None) -> None:
    events = feed(assistant({"type": "text", "text": text}), result(result=text))
    blocked = [e for e in events if isinstance(e, Blocked)]
    assert blocked == ([Blocked(reason)] if reason is not None else [])


def test_a_blocker_only_in_the_final_result_text_counts() -> None:
    events = feed(result(result="Stopped.\nBLOCKED: no credentials"))
    assert events[-1] == Blocked("no credentials")


def test_a_blocked_raw_line_counts_too() -> None:
    parser = StreamJsonParser()
    assert parser.feed("stderr", "BLOCKED: disk full") == [
        Output("BLOCKED: disk full", "stderr"),
        Blocked("disk full"),
    ]


def test_an_error_result_is_a_failure_even_with_a_blocked_line_in_it() -> None:
    events = feed(result(is_error=True, result="BLOCKED: x", api_error_status=529))
    assert events[-1] == Failed("BLOCKED: x (HTTP 529)", kind="provider")


@pytest.mark.parametrize(
    ("name", "tool_input", "summary"),
    [
        ("Read", {"file_path": "/w/src/app.py"}, "src/app.py"),
        ("Read", {"file_path": "/elsewhere/app.py"}, "/elsewhere/app.py"),
        ("Edit", {"file_path": "/w/a", "old_string": "a", "new_string": "bc"}, "a (-1 +2 chars)"),
        ("Bash", {"command": "pytest -q\n  tests", "description": "run"}, "pytest -q tests"),
        ("Grep", {"pattern": "def main", "path": "/w"}, "/w"),
        ("Glob", {"pattern": "**/*.py"}, "**/*.py"),
        ("Agent", {"description": "explore", "prompt": "look"}, "explore"),
        ("Mystery", {"n": 1}, '{"n": 1}'),
        ("Bash", {"command": "x" * 500}, "x" * 159 + "…"),
    ],
)  # fmt: skip
def test_tool_calls_are_summarised_with_paths_relative_to_the_cwd(
    name: str, tool_input: dict[str, object], summary: str
) -> None:
    events = feed(
        {"type": "system", "subtype": "init", "cwd": "/w"},
        assistant({"type": "tool_use", "id": "t1", "name": name, "input": tool_input}),
    )
    assert ToolCall(name, summary) in events


def test_tool_results_keep_the_first_line_and_count_the_rest() -> None:
    content = [{"type": "text", "text": "line one\nline two\n\nline three"}, {"type": "image"}]
    events = feed(
        assistant({"type": "tool_use", "id": "t1", "name": "Read", "input": {}}),
        {
            "type": "user",
            "message": {
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": content}]
            },
        },
    )
    assert ToolResult("Read", "line one (+3 lines)") in events


def test_a_command_result_keeps_its_last_line() -> None:
    output = "warning: something old\n....\n4 passed in 0.10s\n"
    events = feed(
        assistant({"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "pytest"}}),
        {
            "type": "user",
            "message": {
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": output}]
            },
        },
    )
    assert ToolResult("Bash", "4 passed in 0.10s") in events


def test_the_echoed_prompt_and_thinking_blocks_are_not_shown() -> None:
    events = feed(
        {"type": "user", "message": {"role": "user", "content": "the prompt"}},
        assistant({"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "  "}),
    )
    assert events == [Failed("claude-code exited without a result message")]
