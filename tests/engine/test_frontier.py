"""The dependency frontier: what may start, in async and in batch mode."""

from __future__ import annotations

from orchestrator.engine.frontier import Frontier

GRAPH = {"a": (), "slow": (), "b": ("a",), "c": ("b", "slow")}


def test_async_releases_a_task_when_its_own_dependencies_succeeded() -> None:
    pending = set(GRAPH)
    f = Frontier(GRAPH, mode="async")
    assert f.initial(pending.__contains__) == ["a", "slow"]
    pending -= {"a", "slow"}
    assert f.succeeded("a", pending.__contains__) == ["b"]  # slow is still running
    pending.discard("b")
    assert f.succeeded("b", pending.__contains__) == []
    assert f.succeeded("slow", pending.__contains__) == ["c"]


def test_batch_opens_the_next_wave_only_when_the_open_one_settled() -> None:
    pending = set(GRAPH)
    f = Frontier(GRAPH, mode="batch")
    assert f.initial(pending.__contains__) == ["a", "slow"]
    pending -= {"a", "slow"}
    assert f.succeeded("a", pending.__contains__) == []
    assert f.settled("a", pending.__contains__) == []
    f.succeeded("slow", pending.__contains__)
    assert f.settled("slow", pending.__contains__) == ["b"]
    pending.discard("b")
    f.succeeded("b", pending.__contains__)
    assert f.settled("b", pending.__contains__) == ["c"]


def test_batch_skips_waves_with_nothing_left_to_run() -> None:
    f = Frontier({"a": (), "b": ("a",), "c": ("b",)}, mode="batch")
    pending = {"a", "c"}  # b settled already (say, skipped), so c cannot start either
    assert f.initial(pending.__contains__) == ["a"]
    assert f.settled("a", set().__contains__) == []


def test_a_task_nothing_depends_on_holds_no_list_and_can_gain_dependents() -> None:
    """Leaves (most tasks of a wide plan) hold nothing in the reverse map; a task added at
    run time may still depend on one."""
    pending = set(GRAPH)
    f = Frontier(GRAPH, mode="async")
    assert f.dependents("c") == ()
    assert "c" not in f._children
    assert f.add("d", ("c",), lambda t: False) is False
    assert f.dependents("c") == ["d"]
    assert f.succeeded("c", (pending | {"d"}).__contains__) == ["d"]
