"""What a sandboxed spawn gets: limits that bind, signals as unconfined, git that works.

Real bubblewrap, real cgroups (skipped where the machine has none we may use), real git.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.plan.model import Limits, Plan, SandboxSpec, Task
from orchestrator.process.lines import Stream
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
FORKER = Path(__file__).parent / "forker.py"
needs_cgroups = pytest.mark.skipif(SUPPORT.cgroups is None, reason=SUPPORT.limits_note)


def confinement(tmp_path: Path, workspace: Path, **limits: int) -> Confinement:
    plan = Plan("p", (Task("a", agent="command", command=("true",)),), workspace=workspace,
                limits=Limits(**limits))  # fmt: skip
    decision = decide(plan, SUPPORT, responses=tmp_path / "responses", scratch=tmp_path / "scratch")
    assert decision.confinement is not None
    return decision.confinement


AHEAD = {"on": False}
"""Set by `each_spawn_path`: whether `spawn` goes through a sandbox started ahead."""


@pytest.fixture(params=["fresh", "started ahead"])
def each_spawn_path(request: pytest.FixtureRequest) -> Iterator[None]:
    """The test once as a spawn outside a run does it (bubblewrap spawned then), once as a
    run's spawns do (`orchestrator.process.warm`: a sandbox started ahead, in its cgroup)."""
    AHEAD["on"] = request.param == "started ahead"
    yield
    AHEAD["on"] = False


async def spawn(conf: Confinement, argv: list[str], **kw: Any) -> int:
    if not AHEAD["on"]:
        return await run_streaming(argv, sandbox=conf, **kw)
    warm = WarmSandboxes()
    was = WARM.set(warm)
    try:
        await warm.fill(conf, kw["env"])
        code = await run_streaming(argv, sandbox=conf, **kw)
    finally:
        WARM.reset(was)
        await warm.close()
    assert warm.taken == 1, "the spawn took the sandbox started ahead"
    return code


async def run(conf: Confinement, cwd: Path, script: str, **kw: object) -> tuple[int, list[str]]:
    lines: list[str] = []

    def on_line(stream: Stream, line: str) -> None:
        lines.append(line)

    code = await spawn(conf, ["/bin/sh", "-c", script], cwd=cwd, env=dict(os.environ),
                       on_line=on_line, **kw)  # fmt: skip
    return code, lines


@needs_cgroups
@pytest.mark.usefixtures("each_spawn_path")
async def test_the_memory_limit_kills_what_goes_past_it(tmp_path: Path, workspace: Path) -> None:
    conf = confinement(tmp_path, workspace, memory=64 * 2**20)
    grab = f"{sys.executable} -c 'b = bytearray(400 * 2**20); print(len(b))'"
    code, lines = await run(conf, workspace, grab)
    assert code != 0, lines
    assert str(400 * 2**20) not in lines
    small = f"{sys.executable} -c 'b = bytearray(8 * 2**20); print(len(b))'"
    assert (await run(conf, workspace, small))[0] == 0, "under the limit it runs"


@needs_cgroups
@pytest.mark.usefixtures("each_spawn_path")
async def test_the_pids_limit_stops_a_fork_burst(tmp_path: Path, workspace: Path) -> None:
    conf = confinement(tmp_path, workspace, pids=20)
    burst = f"{sys.executable} {FORKER}"
    code, lines = await run(conf, workspace, burst)
    assert code == 0, lines
    started = int(next(line for line in lines if line.startswith("started")).split()[1])
    assert started < 20


@pytest.mark.usefixtures("each_spawn_path")
async def test_sigterm_reaches_the_agent_which_gets_its_grace(
    tmp_path: Path, workspace: Path
) -> None:
    import asyncio

    conf = confinement(tmp_path, workspace)
    script = "trap 'echo got term; exit 7' TERM; echo ready; while :; do sleep 0.05; done"
    seen = asyncio.Event()
    lines: list[str] = []

    def on_line(stream: Stream, line: str) -> None:
        lines.append(line)
        if line == "ready":
            seen.set()

    from orchestrator.process.group import kill_group

    pids: list[int] = []
    task = asyncio.ensure_future(
        spawn(
            conf,
            ["/bin/sh", "-c", script],
            cwd=workspace,
            env=dict(os.environ),
            on_line=on_line,
            on_start=pids.append,
        )
    )
    await asyncio.wait_for(seen.wait(), 10)
    import signal

    kill_group(pids[0], signal.SIGTERM)
    assert await asyncio.wait_for(task, 10) == 7, "the agent's own code, not bwrap's death"
    assert "got term" in lines


@pytest.mark.usefixtures("each_spawn_path")
async def test_a_signal_death_reads_as_unconfined(tmp_path: Path, workspace: Path) -> None:
    conf = confinement(tmp_path, workspace)
    assert (await run(conf, workspace, "kill -9 $$"))[0] == -9
    assert (await run(conf, workspace, "exit 3"))[0] == 3


async def test_a_missing_program_raises_as_unconfined(tmp_path: Path, workspace: Path) -> None:
    conf = confinement(tmp_path, workspace)
    with pytest.raises(FileNotFoundError):
        await run_streaming(["no-such-program-15"], cwd=workspace, env=dict(os.environ),
                            on_line=lambda s, line: None, sandbox=conf)  # fmt: skip


@pytest.mark.usefixtures("each_spawn_path")
async def test_the_private_temp_dir_is_writable_and_removed(
    tmp_path: Path, workspace: Path
) -> None:
    conf = confinement(tmp_path, workspace)
    code, lines = await run(conf, workspace, 'echo x > "$TMPDIR/f" && echo "$TMPDIR"')
    assert code == 0, lines
    assert lines[0].startswith(str(conf.scratch))
    gone = not await asyncio.to_thread(os.path.exists, lines[0])
    assert gone, "removed once the spawn is over"


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)  # noqa: TID251


@pytest.mark.usefixtures("each_spawn_path")
async def test_a_linked_worktree_can_commit_but_not_touch_hooks(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    ident = ["-c", "user.name=t", "-c", "user.email=t@t"]
    git("init", "-q", cwd=repo)
    git(*ident, "commit", "-q", "--allow-empty", "-m", "first", cwd=repo)
    checkout = tmp_path / "checkout"
    git("worktree", "add", "-q", str(checkout), cwd=repo)
    conf = confinement(tmp_path, checkout)
    script = (
        "echo x > f && git add f && git -c user.name=a -c user.email=a@a commit -q -m agent "
        "&& echo COMMITTED; echo evil > " + str(repo / ".git/hooks/post-commit") + " 2>/dev/null"
        " || echo HOOK-REFUSED"
    )
    _, lines = await run(conf, checkout, script)
    assert "COMMITTED" in lines, lines
    assert "HOOK-REFUSED" in lines
    assert not (repo / ".git/hooks/post-commit").exists()


def test_sandbox_spec_defaults_follow_the_agents() -> None:
    command = Plan("p", (Task("a", agent="command", command=("true",)),))
    api = Plan("p", (Task("a", agent="claude", prompt="x"),))
    preset = Plan("p", (Task("a", agent="claude-code", prompt="x"),))
    assert command.sandbox_mode == "best-effort"
    assert api.sandbox_mode == "required"
    assert preset.sandbox_mode == "required"
    off = Plan("p", api.tasks, sandbox=SandboxSpec(mode="off"))
    assert off.sandbox_mode == "off"


@pytest.mark.usefixtures("each_spawn_path")
async def test_a_scratch_directory_planted_as_a_link_is_refused(
    tmp_path: Path, workspace: Path
) -> None:
    conf = confinement(tmp_path, workspace)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    conf.scratch.symlink_to(elsewhere)  # someone was there first
    with pytest.raises(PermissionError):
        await run(conf, workspace, "true")
    assert list(elsewhere.iterdir()) == []


@needs_cgroups
@pytest.mark.usefixtures("each_spawn_path")
async def test_swap_is_limited_with_memory_where_the_controller_allows(
    tmp_path: Path, workspace: Path
) -> None:
    conf = confinement(tmp_path, workspace, memory=64 * 2**20)
    base = conf.cgroups
    assert base is not None
    assert base.memory is not None
    if base.version == 1 and not base.swap:
        assert "swap is not limited" in SUPPORT.limits_note, "said, not silently skipped"
        pytest.skip("cgroup v1 without swap accounting here")
    if base.version == 1:
        where = "/sys/fs/cgroup/memory$(grep :memory: /proc/self/cgroup | cut -d: -f3)"
        name = "memory.memsw.limit_in_bytes"
    else:
        where = "/sys/fs/cgroup$(grep ^0:: /proc/self/cgroup | cut -d: -f3)"
        name = "memory.swap.max"
    # The agent reads its own cgroup: the limits it runs under, not the plan's wish.
    code, lines = await run(conf, workspace, f'cat "{where}/{name}"')
    assert code == 0, lines
    assert lines == [str(64 * 2**20) if base.version == 1 else "0"], lines


@needs_cgroups
@pytest.mark.usefixtures("each_spawn_path")
async def test_nothing_of_the_agent_runs_outside_its_cgroup(
    tmp_path: Path, workspace: Path
) -> None:
    """The cgroup is joined while bubblewrap builds the mounts (no exec of its own): the
    sandbox's init and a fork at the command's very first step are in it, never ours."""
    conf = confinement(tmp_path, workspace, memory=256 * 2**20, pids=64)
    early = "cat /proc/self/cgroup & cat /proc/1/cgroup /proc/self/cgroup; wait"
    code, lines = await run(conf, workspace, early)
    assert code == 0, lines
    ours = {line.split(":", 2)[1]: line.split(":", 2)[2] for line in own_cgroup()}
    controllers = {"memory", "pids"} if conf.cgroups and conf.cgroups.version == 1 else {""}
    seen = [line.split(":", 2) for line in lines if line.split(":", 2)[1] in controllers]
    assert len(seen) == 3 * len(controllers), lines  # the fork, the init, the command
    for _, controller, path in seen:
        assert path != ours[controller], f"{controller} outside the agent's cgroup: {lines}"
        assert path.rsplit("/", 1)[1].startswith(f"orchestrator-{os.getpid()}-"), lines


def own_cgroup() -> list[str]:
    with open("/proc/self/cgroup") as f:
        return f.read().splitlines()
