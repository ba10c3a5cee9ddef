"""Path and read attacks through command agents and ``run_command`` are refused in a sandbox.

The same script run unconfined holds (the control), so each refusal is the sandbox's doing.
The key is a canary in the environment of a process the attacker targets: the orchestrator
itself for command agents, a holder process for ``run_command``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from attacks import ATTACKS, CANARY_KEY, Scene, attack_script, outcome, untouched
from clirun import Fleet, quiet_env

from orchestrator.plan.model import Plan, Task
from orchestrator.sandbox.decision import decide
from orchestrator.sandbox.support import probe
from orchestrator.tools.shell import run_command
from orchestrator.tools.workspace import Workspace

SUPPORT = probe()
pytestmark = pytest.mark.skipif(not SUPPORT.can_sandbox, reason="cannot make a sandbox here")

JOURNAL_PID = "$(sed -n 's/.*\"pid\":\\([0-9]*\\).*/\\1/p' {journal} | head -n 1)"


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.close()


@pytest.fixture
def holder() -> Iterator[int]:
    """A process with the canary key in its environment (what an agent would go after)."""
    env = {**os.environ, "ANTHROPIC_API_KEY": CANARY_KEY}
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], env=env)
    yield proc.pid
    proc.kill()
    proc.wait()


def test_a_command_agent_s_attacks_are_all_refused(fleet: Fleet) -> None:
    scene = Scene.make(fleet.cwd, workspace=fleet.workspace, run_dir=fleet.responses)
    journal = fleet.responses / ".run" / "journal.jsonl"
    script = attack_script(scene, JOURNAL_PID.format(journal=journal))
    fleet.plan({"id": "a", "agent": "command", "command": ["/bin/sh", "-c", script]})
    env = quiet_env(HOME=str(scene.home), ANTHROPIC_API_KEY=CANARY_KEY)
    done = fleet.cli("run", "plan.yaml", "--no-live", env=env, timeout=60)
    assert done.code == 0, done.text
    said = (fleet.responses / "a.md").read_text().splitlines()
    lines = [line.split("| ", 1)[1] for line in said if "| " in line]
    held, refused = outcome(lines)
    assert held == [], f"attacks that held: {held}"
    assert len(refused) == ATTACKS
    assert "WROTE-WORKSPACE" in lines, "the workspace itself stays writable"
    assert untouched(scene) == []


@pytest.mark.parametrize("confined", [True, False], ids=["sandbox", "unconfined-control"])
async def test_run_command_attacks_are_refused_in_a_sandbox(
    tmp_path: Path, holder: int, confined: bool
) -> None:
    scene = Scene.make(tmp_path)
    plan = Plan("p", (Task("a", agent="command", command=("true",)),), workspace=scene.workspace)
    decision = decide(plan, SUPPORT, responses=scene.run_dir, home=scene.home,
                      scratch=tmp_path / "scratch")  # fmt: skip
    lines: list[str] = []
    result = await run_command(
        Workspace(scene.workspace, responses=scene.run_dir),
        attack_script(scene, str(holder), confined=confined),
        env={"PATH": os.environ["PATH"], "HOME": str(scene.home)},
        timeout=30,
        on_output=lambda stream, line: lines.append(line),
        sandbox=decision.confinement if confined else None,
    )
    assert not result.is_error, result.text
    held, refused = outcome(lines)
    assert "WROTE-WORKSPACE" in lines
    if confined:
        assert held == [], f"attacks that held: {held}"
        assert len(refused) == ATTACKS
        assert untouched(scene) == []
    else:  # the control: unconfined, the same script gets through
        assert {"write-outside", "write-hook", "read-ssh-key", "read-holder-environ"} <= set(held)
