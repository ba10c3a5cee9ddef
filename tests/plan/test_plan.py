"""Pure graph helpers over plans."""

from __future__ import annotations

import pytest

from orchestrator.plan.graph import (
    critical_path,
    critical_path_length,
    descendants,
    describe,
    find_cycle,
    graph_of,
    max_width,
    ready_set,
    waves,
)
from orchestrator.plan.model import Limits, Plan, Task

DIAMOND = {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c")}


def test_ready_set_follows_done() -> None:
    assert ready_set(DIAMOND, done=()) == ["a"]
    assert ready_set(DIAMOND, done=["a"]) == ["b", "c"]
    assert ready_set(DIAMOND, done=["a", "b"], started=["c"]) == []
    assert ready_set(DIAMOND, done=["a", "b", "c"]) == ["d"]


def test_waves_and_width() -> None:
    assert waves(DIAMOND) == [["a"], ["b", "c"], ["d"]]
    assert max_width(DIAMOND) == 2


def test_critical_path_by_count_and_by_duration() -> None:
    assert len(critical_path(DIAMOND)) == 3
    durations = {"a": 1.0, "b": 5.0, "c": 1.0, "d": 1.0}
    assert critical_path(DIAMOND, durations) == ["a", "b", "d"]
    assert critical_path_length(DIAMOND, durations) == 7.0


def test_cycle_is_reported_as_a_closed_path() -> None:
    cycle = find_cycle({"a": ("c",), "b": ("a",), "c": ("b",)})
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"a", "b", "c"}
    assert find_cycle(DIAMOND) is None
    with pytest.raises(ValueError, match="cycle"):
        waves({"a": ("b",), "b": ("a",)})


def test_descendants() -> None:
    assert descendants(DIAMOND, ["b"]) == {"d"}
    assert descendants(DIAMOND, ["a"]) == {"b", "c", "d"}


def test_deep_chain_needs_no_recursion() -> None:
    graph = {f"t{i}": ((f"t{i - 1}",) if i else ()) for i in range(20_000)}
    assert find_cycle(graph) is None
    assert len(critical_path(graph)) == 20_000


def test_describe_counts_kinds_and_caps_agents() -> None:
    tasks = (Task("a"), Task("b", depends_on=("a",), agent="command", command=("true",)))
    plan = Plan("p", tasks, limits=Limits(max_agents=3))
    summary = describe(plan)
    assert summary.tasks == 2
    assert summary.waves == 2
    assert summary.critical_path == 2
    assert dict(summary.kinds) == {"command": 1, "scripted": 1}
    assert summary.most_agents == 3
    assert graph_of(tasks) == {"a": (), "b": ("a",)}
