"""Sandboxes started ahead (`orchestrator.process.warm`): a spawn through one runs exactly as
a fresh one, and nothing started ahead outlives its run, whatever happens to it.

Real bubblewrap, bash and cgroups (the cgroup parts are skipped where the machine has none
we may use); the limits themselves are tested through both paths in
``tests/sandbox/test_confinement.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fakes import marked_pids

from orchestrator.plan.model import Limits, Plan, Task
from orchestrator.process.lines import Stream
from orchestrator.process.procfs import RUN_ID_VAR
from orchestrator.process.spawn import run_streaming
from orchestrator.process.warm import WARM, WarmSandboxes
from orchestrator.sandbox.confinement import Confinement
from orchestrator.sandbox.decision import decide
from orchestrator.sandbox.support import probe

SUPPORT = probe()
pytestmark = [
    pytest.mark.skipif(not SUPPORT.can_sandbox, reason="cannot make a sandbox here"),
    pytest.mark.timeout(60),
]
ENV_AND_PLACE = 'env | sort; pwd; grep -E "^(SigIgn|SigBlk)" /proc/self/status; exit 5'


def confinement(tmp_path: Path, workspace: Path) -> Confinement:
    plan = Plan("p", (Task("a", agent="command", command=("true",)),), workspace=workspace,
                limits=Limits(memory=256 * 2**20, pids=64))  # fmt: skip
    decision = decide(plan, SUPPORT, responses=tmp_path / "responses", scratch=tmp_path / "scratch")
    assert decision.confinement is not None
    return decision.confinement


def run_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """An agent's kind of environment: PATH, a run marker, whatever the plan adds."""
    return {"PATH": os.environ["PATH"], RUN_ID_VAR: f"warm-{uuid.uuid4().hex[:8]}", **(extra or {})}


async def spawn(
    conf: Confinement, cwd: Path, script: str, env: dict[str, str], **kw: object
) -> tuple[int, list[str]]:
    lines: list[str] = []

    def on_line(stream: Stream, line: str) -> None:
        lines.append(line)

    code = await run_streaming(["/bin/sh", "-c", script], cwd=cwd, env=env, on_line=on_line,
                               sandbox=conf, **kw)  # type: ignore[arg-type]  # fmt: skip
    return code, lines


def tmpdir_free(lines: list[str]) -> list[str]:
    """The lines but the private temp directory's name, which is new for every spawn."""
    return [line for line in lines if not line.startswith("TMPDIR=")]


@contextlib.asynccontextmanager
async def started_ahead(conf: Confinement, env: dict[str, str]) -> AsyncIterator[WarmSandboxes]:
    """Spawns in the block go through the run's way: sandboxes started ahead for ``conf``
    and ``env``, ready when the block begins, all ended when it ends."""
    warm = WarmSandboxes()
    was = WARM.set(warm)
    try:
        await warm.fill(conf, env)
        yield warm
    finally:
        WARM.reset(was)
        await warm.close()


async def test_a_spawn_through_a_sandbox_started_ahead_is_a_fresh_one(
    tmp_path: Path, workspace: Path
) -> None:
    conf = confinement(tmp_path, workspace)
    odd = {"ODD": "-- a 'b' \"c\" $d", "LINES": "one\ntwo", "EMPTY": ""}
    env = run_env({**odd, "LANG": "C.UTF-8", "LC_MESSAGES": "C"})
    fresh = await spawn(conf, workspace, ENV_AND_PLACE, env)
    async with started_ahead(conf, env) as warm:
        ahead = await spawn(conf, workspace, ENV_AND_PLACE, env)
    assert warm.taken == 1
    assert ahead[0] == fresh[0] == 5
    assert tmpdir_free(ahead[1]) == tmpdir_free(fresh[1])
    assert "SigIgn:\t0000000000000000" in ahead[1], "SIGTERM is the agent's again"
    assert "ODD=-- a 'b' \"c\" $d" in ahead[1]
    assert {"LANG=C.UTF-8", "LC_MESSAGES=C"} <= set(ahead[1]), "the locale reaches the command"


async def test_close_ends_every_sandbox_started_ahead_and_removes_its_cgroup(
    tmp_path: Path, workspace: Path
) -> None:
    conf = confinement(tmp_path, workspace)
    env = run_env()
    warm = WarmSandboxes(ahead=3)
    await warm.fill(conf, env)
    started = marked_pids(env[RUN_ID_VAR])
    assert len(started) == 3
    cgroups = [own_cgroups(pid) for pid in started]
    await warm.close()
    assert marked_pids(env[RUN_ID_VAR]) == []
    assert not await asyncio.to_thread(any_exists, [f"/proc/{pid}" for pid in started])
    for dirs in cgroups:
        assert dirs or conf.cgroups is None, "each in a cgroup of its own"
        assert not await asyncio.to_thread(any_exists, dirs)


def any_exists(paths: list[str]) -> bool:
    return any(os.path.exists(p) for p in paths)


def own_cgroups(pid: int) -> list[str]:
    """The agent cgroup directories ``pid`` is in (none where there are no cgroups)."""
    with open(f"/proc/{pid}/cgroup") as f:
        entries = [line.split(":", 2) for line in f.read().splitlines()]
    dirs = []
    for _, controllers, path in entries:
        for controller in controllers.split(",") if controllers else [""]:
            if "orchestrator-" in path and controller in {"memory", "pids", ""}:
                root = "/sys/fs/cgroup" + (f"/{controller}" if controller else "")
                dirs.append(root + path)
    return dirs


async def test_a_sandbox_killed_while_it_waited_is_passed_over(
    tmp_path: Path, workspace: Path
) -> None:
    conf = confinement(tmp_path, workspace)
    env = run_env()
    async with started_ahead(conf, env) as warm:
        for pid in marked_pids(env[RUN_ID_VAR]):
            os.killpg(pid, signal.SIGKILL)
        await gone(env[RUN_ID_VAR])  # dead (zombies): a kill still in flight is another story
        code, lines = await spawn(conf, workspace, "echo fresh; exit 4", env)
    assert (code, lines) == (4, ["fresh"])
    assert warm.taken == 0, "no dead sandbox was handed the command"


async def test_a_command_line_too_long_to_hand_over_is_spawned_fresh(
    tmp_path: Path, workspace: Path
) -> None:
    conf = confinement(tmp_path, workspace)
    env = run_env({"BIG": "x" * 100_000})  # more than a pipe holds at once
    async with started_ahead(conf, env) as warm:
        code, lines = await spawn(conf, workspace, 'echo "${#BIG}"', env)
    assert (code, lines) == (0, ["100000"])
    assert warm.taken == 0
    assert marked_pids(env[RUN_ID_VAR]) == []


async def test_a_spawn_with_secrets_never_takes_a_sandbox_started_ahead(
    tmp_path: Path, workspace: Path
) -> None:
    conf = confinement(tmp_path, workspace)
    env = run_env()
    async with started_ahead(conf, env) as warm:
        read = 'head -n 1 "/proc/self/fd/$ORCHESTRATOR_SECRETS_FD"'
        code, lines = await spawn(conf, workspace, read, env, secrets={"TOKEN": "s3cret"})
    assert code == 0
    assert lines == ["TOKEN=s3cret"], "handed over by a fresh spawn's descriptor"
    assert warm.taken == 0


KILLED_ORCHESTRATOR = """
import asyncio, os, signal, sys
from orchestrator.process.warm import WarmSandboxes
from orchestrator.sandbox.decision import decide
from orchestrator.sandbox.support import probe
from orchestrator.plan.model import Plan, Task
from pathlib import Path

async def main():
    tmp, workspace, run_id = sys.argv[1:4]
    plan = Plan("p", (Task("a", agent="command", command=("true",)),), workspace=Path(workspace))
    conf = decide(plan, probe(), responses=Path(tmp, "r"), scratch=Path(tmp, "s")).confinement
    warm = WarmSandboxes(ahead=3)
    await warm.fill(conf, {"ORCHESTRATOR_RUN_ID": run_id})
    print("filled", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


async def test_nothing_started_ahead_outlives_an_orchestrator_killed_by_sigkill(
    tmp_path: Path, workspace: Path
) -> None:
    run_id = f"warm-{uuid.uuid4().hex[:8]}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_ORCHESTRATOR, str(tmp_path), str(workspace), run_id,
        stdout=subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == -signal.SIGKILL
    assert out.decode().split() == ["filled"], out
    # Their command pipes closed with the orchestrator: each reads an end of file and exits.
    await gone(run_id)


async def gone(run_id: str) -> None:
    """Wait (10 s at most) until no live process carries ``run_id``'s marker."""
    for _ in range(500):
        if not marked_pids(run_id):
            return
        await asyncio.sleep(0.02)
    assert marked_pids(run_id) == []
