"""Run history: a fresh run keeps the previous run's files under its run id; `runs` lists the
runs; every reading command opens one with ``--run ID``; only `runs prune` deletes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from clirun import Fleet, task


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.close()


def test_each_run_keeps_its_files_and_every_reader_opens_a_past_one(fleet: Fleet) -> None:
    fleet.plan(task("a", {"say": "first run"}), name="one")
    assert fleet.cli("run", "one.yaml", "--no-live").code == 0
    first = fleet.run_id()
    fleet.plan(task("b", {"fail": "second run"}), name="two")
    assert fleet.cli("run", "two.yaml", "--no-live").code == 1
    second = fleet.run_id()
    assert first != second
    # the newest run is where it always was; the earlier one under its id
    assert (fleet.responses / "b.md").is_file()
    assert not (fleet.responses / "a.md").exists()
    kept = fleet.responses / ".runs" / first
    assert "first run" in (kept / "a.md").read_text()
    assert (kept / "REPORT.md").is_file()

    listed = json.loads(fleet.call("runs", "--json").out)["runs"]
    assert [(r["id"], r["plan"], r["state"], r["exit_code"], r["current"]) for r in listed] == [
        (first, "one", "finished", 0, False),
        (second, "two", "finished", 1, True),
    ]
    assert all(r["duration"] is not None and r["duration"] >= 0 for r in listed)
    assert all(r["cost_usd"] == 0.0 for r in listed)
    text = fleet.call("runs").out
    assert first in text
    assert f"{second} (current)" in text

    status = json.loads(fleet.call("status", "--run", first, "--json").out)
    assert [a["id"] for a in status["agents"]] == ["a"]
    assert "first run" in fleet.call("peek", "a", "--run", first).out
    assert "first run" in fleet.call("tail", "a", "--run", first).out
    assert fleet.call("wait", "a", "--run", first).code == 0
    report = json.loads(fleet.call("report", "--run", first, "--json").out)
    assert report["report"] == str(Path("agent-responses", ".runs", first, "REPORT.md"))
    assert [a["id"] for a in json.loads(fleet.call("status", "--run", second, "--json").out)
            ["agents"]] == ["b"]  # fmt: skip
    missing = fleet.call("status", "--run", "nope")
    assert missing.code == 2
    assert "orchestrator runs" in missing.err

    fleet.plan(task("c"), name="three")
    assert fleet.cli("run", "three.yaml", "--no-live").code == 0
    assert len(json.loads(fleet.call("runs", "--json").out)["runs"]) == 3, "nothing deleted"
    pruned = json.loads(fleet.call("runs", "prune", "--keep", "1", "--json").out)
    assert pruned == {"deleted": [first]}
    assert not kept.exists()
    ids = [r["id"] for r in json.loads(fleet.call("runs", "--json").out)["runs"]]
    assert ids[0] == second
    assert fleet.call("runs", "prune", "--keep", "-1").code == 2


def test_a_responses_directory_without_runs_lists_none(fleet: Fleet) -> None:
    done = fleet.call("runs")
    assert (done.code, done.out) == (0, "no runs recorded in agent-responses\n")
