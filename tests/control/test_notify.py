"""``notify:``: a command run once the run ended, with its outcome in its environment, and the
terminal's bell; neither changes the run's exit code."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from clirun import Fleet, quiet_env, task

from orchestrator.control.notify import notify_end
from orchestrator.plan.model import Notify


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.close()


def test_the_notify_command_gets_the_outcome_and_never_the_key(fleet: Fleet) -> None:
    out = fleet.cwd / "told.env"
    fleet.plan(
        task("a"), task("b", {"fail": "no luck"}),
        notify={"command": f"env | grep -E '^(ORCHESTRATOR_|ANTHROPIC_)' > {out}; echo told"},
    )  # fmt: skip
    done = fleet.cli("run", "plan.yaml", "--no-live", env=quiet_env(ANTHROPIC_API_KEY="sk-x"))
    assert done.code == 1, done.text
    assert "notify: told" in done.err
    told = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert told["ORCHESTRATOR_OUTCOME"] == "failed"
    assert told["ORCHESTRATOR_EXIT_CODE"] == "1"
    assert (told["ORCHESTRATOR_TASKS"], told["ORCHESTRATOR_SUCCEEDED"]) == ("2", "1")
    assert told["ORCHESTRATOR_PLAN"] == "plan"
    assert told["ORCHESTRATOR_REPORT"] == str((fleet.responses / "REPORT.md").resolve())
    assert told["ORCHESTRATOR_SUMMARY"] == "plan: failed, 1 of 2 tasks succeeded, build none"
    assert "ANTHROPIC_API_KEY" not in told


def test_a_failing_notify_command_is_reported_and_the_exit_code_stays(fleet: Fleet) -> None:
    fleet.plan(task("a"), notify={"command": ["sh", "-c", "exit 4"], "bell": False})
    done = fleet.cli("run", "plan.yaml", "--no-live")
    assert done.code == 0, done.text
    assert "notify: the command exited 4" in done.err
    assert "\a" not in done.out + done.err


async def test_the_bell_rings_only_on_a_terminal_and_a_hung_command_is_stopped(
    tmp_path: Path,
) -> None:
    said: list[str] = []
    outcome = {"ORCHESTRATOR_RUN_ID": "t-1", "ORCHESTRATOR_OUTCOME": "succeeded"}
    hung = Notify(command=("sleep 30",), shell=True, bell=True, timeout=0.3)
    await notify_end(hung, outcome, workspace=tmp_path, grace=0.1, tty=True, write=said.append)
    assert said == ["\a", "notify: stopped after 0.3s (notify.timeout)\n"]
    said.clear()
    await notify_end(Notify(bell=True), outcome, workspace=tmp_path, grace=0.1, tty=False,
                     write=said.append)  # fmt: skip
    assert said == []
