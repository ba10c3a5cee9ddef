"""Declared secrets: a program gets them once through a pipe; the tools it runs do not.

A credential the gateway cannot stand in for (here a made-up service token) is declared
with ``secrets:``: the program reads it from ``ORCHESTRATOR_SECRETS_FD``; a tool it starts
afterwards finds the pipe empty and the value in no environment, argument or file, and (the
program having made itself non-dumpable, as docs/plan.md asks) cannot open its memory.
Passing a well-known credential by ``pass_env`` is refused before anything runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from clirun import Fleet

from orchestrator.engine.scheduler import Run
from orchestrator.errors import PlanErrors
from orchestrator.plan.load import load_plan
from orchestrator.plan.model import Plan, Task
from orchestrator.sandbox.decision import decide
from orchestrator.sandbox.support import probe

SUPPORT = probe()
pytestmark = pytest.mark.timeout(60)
VALUE = "svc-canary-" + "3" * 24
PROGRAM = r"""
import ctypes, os, subprocess, sys

fd = int(os.environ["ORCHESTRATOR_SECRETS_FD"])
got = dict(line.split("=", 1) for line in os.read(fd, 65536).decode().splitlines())
token = got.get("SVC_TOKEN", "")
print("program got the token:", token[:11] + "...", len(token))
with open("got.txt", "w") as f:  # for the test only: what the program received
    f.write(got["SVC_TOKEN"])
# A tool started afterwards, holding the same descriptor, looks everywhere it can.
tool = (
    "cat /dev/fd/$FD; cat /proc/$PPID/fd/$FD; env; cat /proc/$PPID/environ /proc/$PPID/cmdline; "
    "cat /proc/self/environ; grep -r svc-canary \"$TMPDIR\" 2>/dev/null"
)
found = subprocess.run(["sh", "-c", tool], env={**os.environ, "FD": str(fd)},
                       capture_output=True, pass_fds=(fd,)).stdout
open("tool.txt", "wb").write(found)
ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: its memory is its own
mem = subprocess.run([sys.executable, "-c", f"open('/proc/{os.getpid()}/mem', 'rb')"],
                     capture_output=True, text=True)
print("tool opening the program's memory:", "refused" if mem.returncode else "allowed")
"""


@pytest.mark.parametrize("confined", [True, False])
async def test_the_program_gets_it_and_its_tools_do_not(
    confined: bool,
    make_run: Callable[..., Run],
    workspace: Path,
    responses: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if confined and not SUPPORT.can_sandbox:
        pytest.skip("cannot make a sandbox here")
    monkeypatch.setenv("SVC_TOKEN", VALUE)
    (workspace / "program.py").write_text(PROGRAM)
    task = Task("t", agent="command", command=(sys.executable, "program.py"),
                secrets=("SVC_TOKEN",))  # fmt: skip
    plan = Plan("p", (task,), workspace=workspace)
    conf = None
    if confined:
        conf = decide(plan, SUPPORT, responses=responses, scratch=tmp_path / "s").confinement
    run = make_run(task, sandbox=conf)
    await run.execute()
    md = (responses / "t.md").read_text()
    assert run.agents["t"].state == "succeeded", md
    assert (workspace / "got.txt").read_text() == VALUE, "the program got it, whole"
    found = (workspace / "tool.txt").read_bytes()
    assert b"svc-canary" not in found, found
    assert b"ORCHESTRATOR_SECRETS_FD" in found, "the tool did look (its env was captured)"
    if confined or os.geteuid() != 0:  # unconfined root keeps CAP_SYS_PTRACE: no refusal
        assert "tool opening the program's memory: refused" in md, md
    (workspace / "got.txt").unlink()
    assert no_file_holds(VALUE, responses, workspace)
    assert VALUE not in "\n".join(f"{k}={v}" for k, v in os.environ.items() if k != "SVC_TOKEN")


def no_file_holds(value: str, *trees: Path) -> bool:
    for tree in trees:
        for path in tree.rglob("*"):
            if path.is_file():
                assert value not in path.read_text(errors="replace"), path
    return True


def load(tmp_path: Path, task: str) -> Plan:
    path = tmp_path / "plan.yaml"
    path.write_text(f"tasks:\n  - {task}\n")
    return load_plan(path)


@pytest.mark.parametrize(
    ("task", "rule"),
    [
        ('{id: a, agent: command, command: ["true"], pass_env: [GITHUB_TOKEN]}', "secret-in-env"),
        ('{id: a, agent: command, command: ["true"], pass_env: [AWS_SECRET_ACCESS_KEY]}',
         "secret-in-env"),
        ("{id: a, agent: claude, prompt: x, secrets: [GITHUB_TOKEN]}", "bad-key"),
        ('{id: a, agent: command, command: ["true"], secrets: ["1X"]}', "bad-env"),
        ('{id: a, agent: command, command: ["true"], secrets: [ANTHROPIC_API_KEY]}',
         "secret-model-key"),
        ('{id: a, agent: codex, prompt: x, secrets: [OPENAI_API_KEY]}', "secret-model-key"),
    ],
)  # fmt: skip
def test_credentials_in_the_environment_are_refused_with_a_hint(
    tmp_path: Path, task: str, rule: str
) -> None:
    with pytest.raises(PlanErrors) as caught:
        load(tmp_path, task)
    (error,) = caught.value.errors
    assert (error.rule, error.where.line) == (rule, 2), str(error)
    if rule == "secret-in-env":
        assert "secrets:" in (error.hint or "")
    if rule == "secret-model-key":  # the key never reaches an agent: a gateway token does
        assert "pass_env" in (error.hint or "")


def test_declared_secrets_and_model_keys_by_name_load(tmp_path: Path) -> None:
    plan = load(tmp_path, '{id: a, agent: command, command: ["true"], secrets: [GITHUB_TOKEN], '
                          "pass_env: [ANTHROPIC_API_KEY]}")  # fmt: skip
    assert plan.tasks[0].secrets == ("GITHUB_TOKEN",)


def test_a_declared_secret_the_environment_lacks_stops_the_run_before_it_starts(
    tmp_path: Path,
) -> None:
    fleet = Fleet(tmp_path)
    try:
        fleet.plan({"id": "a", "agent": "command", "command": ["true"],
                    "secrets": ["SVC_TOKEN_UNSET_15"]})  # fmt: skip
        done = fleet.cli("run", "plan.yaml", "--no-live")
        assert done.code == 3, done.text
        assert "SVC_TOKEN_UNSET_15" in done.err
        assert not (fleet.responses / "a.md").exists(), "nothing was started"
    finally:
        fleet.close()
