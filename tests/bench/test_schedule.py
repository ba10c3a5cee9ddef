"""The benchmark's floors: list scheduling (B17's ideal, B1's serial starts) and the file
floor they are costed with."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.overhead import file_floor
from bench.peers import ideal
from bench.workloads import Workload, list_schedule

pytestmark = pytest.mark.timeout(30)


def test_with_no_start_cost_every_ready_task_starts_at_once() -> None:
    graph = {"a": (), "b": (), "c": ("a",)}
    assert list_schedule(graph, {"a": 1.0, "b": 5.0, "c": 2.0}) == 5.0  # b alone is the path
    assert list_schedule(graph, {"a": 1.0, "b": 2.0, "c": 2.0}) == 3.0  # a then c


def test_slots_hold_ready_tasks_back_in_plan_order() -> None:
    graph = {"a": (), "b": (), "c": ()}
    durations = {"a": 1.0, "b": 2.0, "c": 4.0}
    assert list_schedule(graph, durations, 1) == 7.0
    # Two slots: a and b start; c takes a's slot when a ends at 1 and ends at 5.
    assert list_schedule(graph, durations, 2) == 5.0


def test_starts_are_serial_and_each_waits_for_its_own() -> None:
    # A burst of three: they act at 0.5, 1.0 and 1.5; the longest, last in plan order, ends last.
    graph = {"a": (), "b": (), "c": ()}
    assert list_schedule(graph, {"a": 1.0, "b": 1.0, "c": 5.0}, start_cost=0.5) == 6.5
    # First in plan order, the same task ends at 5.5: the order of the burst is the plan's.
    assert list_schedule(graph, {"a": 5.0, "b": 1.0, "c": 1.0}, start_cost=0.5) == 5.5


def test_a_start_waits_for_the_writer_busy_with_others() -> None:
    # x ends at 0.25 + 0.1 while y's and z's starts hold the writer until 0.75: x's child
    # starts after them, at 1.0, and ends at 2.0.
    graph = {"x": (), "y": (), "z": (), "k": ("x",)}
    durations = {"x": 0.1, "y": 0.1, "z": 0.1, "k": 1.0}
    assert list_schedule(graph, durations, start_cost=0.25) == 2.0


def test_peers_ideal_is_list_scheduling_to_the_millisecond() -> None:
    work = Workload("w", {"a": (), "b": ("a",)}, {"a": 0.0004, "b": 1.2346})
    assert ideal(work, 4) == pytest.approx(1.235)


def test_the_file_floor_times_the_starts_within_the_whole_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    floor = file_floor(tmp_path / "floor", 20)
    assert 0 < floor.starts < floor.total
    assert not (tmp_path / "floor").exists()
