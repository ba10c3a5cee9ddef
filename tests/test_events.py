"""The event vocabulary: every event survives a round trip through its JSON form."""

from __future__ import annotations

import json

import pytest

from orchestrator.events import (
    TERMINAL_STATES,
    AgentEvent,
    Blocked,
    Failed,
    Finished,
    Output,
    Started,
    Text,
    ToolCall,
    ToolResult,
    Usage,
    event_from_dict,
    event_to_dict,
)

EVENTS: list[AgentEvent] = [
    Started("scripted (2 steps)", pid=12),
    Text("hello\n"),
    ToolCall("write_file", "a.py (3 chars)"),
    ToolResult("write_file", "wrote 3 bytes", is_error=False),
    Output("line", "stderr"),
    Blocked("need the schema"),
    Usage(10, 20, 0.5),
    Finished("done"),
    Failed("max turns (3) reached", kind="max_turns"),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_round_trip_through_json(event: AgentEvent) -> None:
    data = json.loads(json.dumps(event_to_dict(event)))
    assert data["event"] == type(event).__name__.lower()
    assert event_from_dict(data) == event


def test_terminal_states_are_every_state_but_pending_and_running() -> None:
    assert "pending" not in TERMINAL_STATES
    assert "running" not in TERMINAL_STATES
    assert {"succeeded", "lost", "budget_exceeded", "escalated"} <= TERMINAL_STATES
