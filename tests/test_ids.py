"""Every id of the grammar is a task id: derived agents (retries, fixers, builds) are named with
a separator no task id contains, and every command takes their ids."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from clirun import Fleet, task

from orchestrator import ids


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.close()


@pytest.mark.parametrize("task_id", ["build", "build-1", "fix-a-1", "a.2", "Report", "x"])
def test_no_derived_id_is_a_task_id(task_id: str) -> None:
    derived = [ids.agent_id_of(task_id, 2), ids.fixer_id(task_id, 1), ids.build_id(1),
               ids.fixer_id(None, 1)]  # fmt: skip
    for agent_id in derived:
        assert ids.TASK_ID.fullmatch(agent_id) is None, agent_id
        assert ids.is_file_name(agent_id + ".events.jsonl")
    assert ids.agent_id_of(task_id, 1) == task_id


def test_natural_task_ids_run_and_every_command_takes_derived_ids(fleet: Fleet) -> None:
    blocks = {"block": "needs a file"}
    fleet.plan(
        task("build-docs"), task("fix-tests"), task("Report"), task("lint.2"),
        task("build", blocks, retry_script=[{"say": "unblocked"}]),
        fixer={"agent": "scripted", "script": [{"say": "fixed it"}]},
        build={"command": "test -f nothing-here || exit 1", "max_fix_cycles": 1},
    )  # fmt: skip
    done = fleet.cli("run", "plan.yaml", "--no-live")
    assert done.code == 1, done.text  # the build check cannot pass: no file will appear
    agents = fleet.journal().agents
    assert {"build-docs", "fix-tests", "Report", "lint.2", "build", "build+fix1", "build+2",
            "+build1", "+build+fix1", "+build2"} <= set(agents)  # fmt: skip
    assert agents["build+2"]["task"] == "build"
    assert agents["+build1"]["task"] == "+build"
    for agent_id in ("build+fix1", "+build1", "+build+fix1", "build+2"):
        assert fleet.call("peek", agent_id).code == 0, agent_id
        assert fleet.call("tail", agent_id).out.startswith(f"# {agent_id}\n"), agent_id
        assert fleet.call("wait", agent_id).code in (0, 1), agent_id
        assert fleet.call("cancel", agent_id).code == 0, agent_id
    assert "unblocked" in fleet.call("tail", "build").out, "a task id means its latest attempt"
    assert (fleet.responses / "Report.md").is_file()
    assert (fleet.responses / "REPORT.md").is_file()
