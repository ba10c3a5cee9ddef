"""What a plan runs and where: a string ``command:`` is a command line for ``sh -c``, a list a
program and its arguments run without a shell (the same in a task, ``defaults:``, ``fixer:``
and ``build:``); a workspace that does not exist is an error unless the plan or a flag asks
for it to be made."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from clirun import Fleet, quiet_env

from orchestrator.errors import PlanErrors
from orchestrator.plan.load import load_plan


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.close()


def progress(fleet: Fleet, agent_id: str) -> str:
    return (fleet.responses / f"{agent_id}.md").read_text()


def test_strings_run_in_a_shell_and_lists_do_not_everywhere(fleet: Fleet) -> None:
    fleet.plan(
        {"id": "piped", "command": 'echo "$HOME" | tr a-z A-Z'},
        {"id": "looped", "command": "for i in 1 2 3; do echo n$i; done"},
        {"id": "literal", "command": ["echo", "$HOME", "|", "tr"]},
        {"id": "defaulted", "prompt": "from the defaults"},
        {"id": "blocked", "command": "test -f fixed || echo 'BLOCKED: needs the fixer'"},
        defaults={"agent": "command", "command": "echo {prompt} > defaulted.txt; echo $((1+1))"},
        fixer={"agent": "command", "command": ["touch", "fixed"]},
        build={"command": ["test", "-f", "defaulted.txt"]},
        workspace="ws",
    )  # fmt: skip
    done = fleet.cli("run", "plan.yaml", "--no-live", env=quiet_env(HOME="/home/someone"))
    assert done.code == 0, done.text + progress(fleet, "blocked")
    assert "| /HOME/SOMEONE" in progress(fleet, "piped")
    assert "| n3" in progress(fleet, "looped")
    assert "| $HOME | tr" in progress(fleet, "literal")
    assert "| 2" in progress(fleet, "defaulted")
    assert (fleet.workspace / "defaulted.txt").read_text() == "from the defaults\n"
    assert (fleet.workspace / "fixed").exists(), "the fixer's list ran"
    assert "check: `test -f defaulted.txt` exited 0" in progress(fleet, "+build1")


def test_a_build_command_line_runs_in_a_shell(fleet: Fleet) -> None:
    fleet.plan({"id": "a", "agent": "scripted", "script": [{"say": "hi"}]},
               build={"command": "test -d . && echo built | tr a-z A-Z"})  # fmt: skip
    done = fleet.cli("run", "plan.yaml", "--no-live")
    assert done.code == 0, done.text
    assert "| BUILT" in progress(fleet, "+build1")


def test_a_missing_program_named_plainly_is_refused_before_start(fleet: Fleet) -> None:
    fleet.plan({"id": "a", "agent": "command", "command": "no-such-tool-9d1 --all && echo ok"})
    done = fleet.cli("run", "plan.yaml", "--no-live")
    assert done.code == 3, done.text
    assert "no-such-tool-9d1" in done.err
    assert not fleet.responses.exists()


OK = "tasks:\n  - {id: a, agent: scripted, script: [{say: x}]}\n"


@pytest.mark.parametrize(
    ("text", "rule", "says"),
    [
        ("tasks:\n  - {id: a, agent: command, command: 'ls', shell: true}\n",
         "unknown-field", "a string command runs in a shell"),
        ("fixer: {agent: command, command: x, shell: true}\n" + OK,
         "unknown-field", "a string command runs in a shell"),
        ("tasks:\n  - id: a\n    agent: command\n    command: [make all && echo done]\n",
         "bad-command", "write the command line as a string"),
        ("build:\n  command: [python -m pytest -q]\n" + OK,
         "bad-command", "write the command line as a string"),
    ],
)  # fmt: skip
def test_the_old_spellings_are_refused_with_what_to_write(
    tmp_path: Path, text: str, rule: str, says: str
) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    with pytest.raises(PlanErrors) as info:
        load_plan(path)
    (error,) = info.value.errors
    assert error.rule == rule
    assert says in error.hint


def test_a_workspace_that_does_not_exist_is_exit_2_unless_asked_for(fleet: Fleet) -> None:
    fleet.plan({"id": "a", "agent": "scripted", "script": [{"say": "hi"}]},
               workspace="nowhere", create_workspace=False)  # fmt: skip
    done = fleet.cli("run", "plan.yaml", "--no-live")
    assert done.code == 2, done.text
    assert "workspace" in done.err
    assert "nowhere does not exist" in done.err
    assert "create_workspace: true" in done.err
    assert not (fleet.cwd / "nowhere").exists()
    assert not fleet.responses.exists(), "nothing written before the refusal"
    done = fleet.cli("run", "plan.yaml", "--no-live", "--create-workspace")
    assert done.code == 0, done.text
    assert (fleet.cwd / "nowhere").is_dir()
