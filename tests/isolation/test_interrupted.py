"""Cancel and SIGKILL mid-run, then --resume: nothing landed twice, nothing lost."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from clirun import Fleet, poll, task


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.close()


def landings(fleet: Fleet, run_id: str) -> list[str]:
    git_dir = fleet.journal().run["git_dir"]
    out = subprocess.check_output(
        ["git", "--git-dir", git_dir, "log", "--format=%(trailers:key=Orchestrator-Task,valueonly)",
         f"refs/orchestrator/{run_id}/integration"],
        text=True,
    )  # fmt: skip
    return [line for line in out.splitlines() if line]


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL])
def test_a_stopped_run_resumes_from_git_landed_work_stays_and_wip_carries_on(
    fleet: Fleet, tmp_path: Path, how: signal.Signals
) -> None:
    go = tmp_path / "go"
    fleet.plan(
        task("a", {"write": {"path": "a.txt", "content": "a\n"}}),
        task("b", {"run": f"echo step >> b.txt; while [ ! -e {go} ]; do sleep 0.02; done"}),
        task("c", {"run": "cat a.txt b.txt > c.txt"}, deps=("a", "b")),
        isolation="auto",
    )
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_state("a", "succeeded")
    checkout = Path(fleet.wait_running("b").agents["b"]["checkout"])
    poll(lambda: (checkout / "b.txt").exists(), what="b's first step")
    run_id = fleet.run_id()
    run.send_signal(how)
    run.wait(timeout=30)
    assert landings(fleet, run_id) == ["a"]
    go.touch()
    again = fleet.cli("run", "plan.yaml", "--no-live", "--resume", timeout=20)
    assert again.code == 0, again.text
    assert sorted(landings(fleet, run_id)) == ["a", "b", "c"], "nothing landed twice"
    assert (fleet.workspace / "b.txt").read_text() == "step\nstep\n", "b went on from its WIP"
    assert (fleet.workspace / "c.txt").read_text() == "a\nstep\nstep\n"
