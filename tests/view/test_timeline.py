"""The timeline is a pure function of a run's agents and graph: waits, gates, critical path."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clirun import Fleet, task

from orchestrator.view.timeline import build, svg

RUN = {"plan": "p", "started": 100.0}


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.close()


def agent(aid: str, start: float, end: float | None, **kw: Any) -> dict[str, Any]:
    return {"id": aid, "task": kw.pop("task", aid), "role": "task", "state": "succeeded",
            "started": start, "ended": end, **kw}  # fmt: skip


def test_waits_split_into_dependencies_and_a_free_slot() -> None:
    agents = [
        agent("a", 100.0, 103.0),
        agent("b", 100.0, 101.0),
        agent("c", 105.0, 106.0),  # ready at 103 (a), started at 105: 2 s for a slot
    ]
    tl = build(RUN, agents, {"a": [], "b": [], "c": ["a", "b"]})
    assert tl.waits["a"] == (0.0, 0.0)
    assert tl.waits["c"] == pytest.approx((3.0, 2.0))
    bar = {b.agent: b for b in tl.bars}["c"]
    assert bar.gate == "a"  # the dependency that settled last


def test_the_critical_path_runs_back_from_the_last_end_through_gates() -> None:
    agents = [
        agent("a", 100.0, 102.0),
        agent("b", 100.0, 101.0),
        agent("c", 102.0, 104.0),
        agent("d", 101.0, 103.5),
        agent("+build1", 104.0, 105.0, task="build", role="build"),
    ]
    graph = {"a": [], "b": [], "c": ["a"], "d": ["b"]}
    tl = build(RUN, agents, graph)
    assert tl.critical == ("a", "c", "+build1")
    assert {b.agent for b in tl.bars if b.critical} == {"a", "c", "+build1"}
    assert tl.end == 105.0


def test_a_blocked_task_its_fixer_and_its_retry_chain_together() -> None:
    agents = [
        agent("api", 100.0, 101.0, state="blocked"),
        agent("api+fix1", 101.5, 103.0, task="api", role="fixer", parent="api"),
        agent("api+2", 103.0, 104.0, task="api", attempt=2),
    ]
    tl = build(RUN, agents, {"api": []})
    gates = {b.agent: b.gate for b in tl.bars}
    assert gates == {"api": None, "api+fix1": "api", "api+2": "api+fix1"}
    assert tl.critical == ("api", "api+fix1", "api+2")


def test_running_agents_end_at_now_and_an_empty_run_draws() -> None:
    tl = build(RUN, [agent("a", 100.0, None, state="running")], {"a": []}, now=110.0)
    assert tl.bars[0].end == 110.0
    empty = build(RUN, [], {})
    assert empty.bars == ()
    assert empty.critical == ()
    ET.fromstring(svg(empty, title="nothing"))


def test_a_run_that_has_not_started_yet_draws_a_short_picture_not_decades() -> None:
    # the web feed draws before the run's start is known: the axis begins now, not at 1970
    tl = build({"plan": "p"}, [], {"a": []}, now=1_800_000_000.0)
    assert tl.end - tl.start < 1.0
    picture = svg(tl, title="p")
    assert len(picture) < 4_000, "an empty run's picture is a few hundred bytes"


@pytest.mark.parametrize("span", [1.0, 3_000.0, 86_400.0 * 30, 1e9])
def test_the_axis_has_at_most_a_dozen_ticks_whatever_the_span(span: float) -> None:
    tl = build(RUN, [agent("a", 100.0, 100.0 + span)], {"a": []})
    ticks = svg(tl, title="p").count('stroke="#eee"')
    assert 2 <= ticks <= 13


def test_the_svg_is_well_formed_escapes_text_and_shows_every_agent() -> None:
    agents = [agent(f"t{i}", 100.0 + i * 0.01, 101.0 + i * 0.01) for i in range(500)]
    agents.append(agent("x", 100.0, 100.5, reason="<script>&"))
    tl = build({"plan": "<b>[/]</b>", "started": 100.0}, agents, {})
    text = svg(tl, title="<b>[/]</b> & co")
    root = ET.fromstring(text)  # well-formed: hostile text was escaped
    labels = [el.text for el in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "<b>[/]</b> & co" in labels
    assert sum(1 for label in labels if label and label.startswith("t")) == 500
    assert int(root.get("height", "0")) >= 500 * 16  # one readable row per agent


def test_a_run_writes_its_timeline_and_report_regenerates_both(fleet: Fleet) -> None:
    fleet.plan(
        task("a", {"sleep": 0.05}),
        task("b", {"block": "needs a schema"}, deps=("a",)),
        fixer={"agent": "scripted", "script": [{"fail": "cannot"}]},
    )
    done = fleet.cli("run", "plan.yaml", "--no-live")
    assert done.code == 1, done.text
    report_md = fleet.responses / "REPORT.md"
    timeline = fleet.responses / "timeline.svg"
    first = report_md.read_text()
    assert "[timeline.svg](timeline.svg)" in first
    labels = [el.text for el in ET.parse(timeline).iter("{http://www.w3.org/2000/svg}text")]
    assert {"a", "b", "b+fix1 (fixer)"} <= set(labels)
    report_md.unlink()
    timeline.unlink()
    again = fleet.cli("report")
    assert again.code == 0, again.text
    second = report_md.read_text()
    assert "## Escalations" in second
    assert "needs a schema" in second
    assert second.split("## Tasks")[1] == first.split("## Tasks")[1]
    assert timeline.is_file()


def test_report_without_a_run_exits_2(fleet: Fleet) -> None:
    done = fleet.cli("report")
    assert done.code == 2
    assert "no run recorded" in done.err
