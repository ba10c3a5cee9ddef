"""Remote agents confined like local ones, adding tasks, and spread by node size: a real
two-node Ray cluster on this machine whose head has no bubblewrap (it cannot sandbox) and 1
CPU, and whose second node has bubblewrap and 3 CPUs.

Slow (a cluster takes ~20 s to start on 2 cores); skipped, saying why, without the ray extra.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakeapi import serve_in_thread, text, tool_use
from rayhelp import (
    driver_env,
    key_leaks,
    orch,
    run_ids,
    run_processes,
    said,
    shell,
    start_run,
    states,
    status,
    wait_for,
    write_plan,
)

from bench.raycluster import RayCluster, path_without, start_cluster

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("ray") is None,
        reason="the ray extra is not installed (pip install '.[ray]')",
    ),
    pytest.mark.timeout(300),
]
DAEMON = "987651"
"""The seconds a double-forked, setsid, env -i daemon sleeps: found by its command line."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    path = path_without("bwrap", tmp_path_factory.mktemp("nobwrap"))
    cluster = start_cluster(cpus=(1, 3), head_env={"PATH": path})
    try:
        yield cluster
    finally:
        cluster.stop()
    assert cluster.processes() == [], "processes of the test cluster survived its stop"


def daemons() -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if DAEMON.encode() in argv:
                found.append(int(entry))
    return found


def test_remote_agents_are_confined_and_a_node_without_a_sandbox_gets_none(
    cluster: RayCluster, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    spawn = f"setsid sh -c 'env -i sleep {DAEMON} </dev/null >/dev/null 2>&1 &' &"
    look = "ls /proc | grep -c '^[0-9][0-9]*$' > procs.txt; cat /proc/1/cmdline > init.txt"
    home_canary = f"$HOME/.orchestrator-canary-{tmp_path.name}"
    escape = f"echo x > {outside}/canary.txt; echo $? > rc.txt; echo y > {home_canary}; true"
    tasks = [
        shell("look", look),
        shell("escape", escape),
        shell("leaver", f"{spawn} echo left; sleep 1"),
        shell("stay", f"{spawn} echo up; sleep 120"),
    ]
    plan = write_plan(tmp_path, tasks, sandbox="required", limits={"grace": 2})
    proc = start_run(tmp_path, plan, cluster.address)
    try:
        wait_for(lambda: said(tmp_path, "stay", "| up") and states(tmp_path).get("leaver"))
        (run_id,) = run_ids(tmp_path)
        assert key_leaks(cluster, [*run_processes(run_id), *daemons()]) == []
        wait_for(lambda: states(tmp_path).get("leaver") == "succeeded")
        # the leaver's daemon died with its sandbox when its command ended; stay's lives on
        wait_for(lambda: len(daemons()) == 1)
        assert orch(tmp_path, "cancel", "stay").returncode == 0
        wait_for(lambda: daemons() == [], timeout=30)  # and dies with stay's, on cancel
        assert proc.wait(timeout=120) == 1  # one task cancelled
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    log = (tmp_path / "orchestrator.log").read_text()
    assert "cannot make a sandbox (no bwrap on PATH" in log, log
    report = (tmp_path / "agent-responses" / "REPORT.md").read_text()
    assert "cannot make a sandbox (no bwrap on PATH" in report, "the report says it too"
    agents = {a["id"]: a for a in status(tmp_path)["agents"]}
    assert agents["stay"]["state"] == "cancelled"
    assert len({a["node"] for t, a in agents.items() if t in ("look", "escape", "stay")}) == 1
    ws = tmp_path / "ws"
    assert int((ws / "procs.txt").read_text()) < 10, "it sees its sandbox's processes only"
    assert "bwrap" in (ws / "init.txt").read_text()
    assert (ws / "rc.txt").read_text().strip() != "0"
    assert not (outside / "canary.txt").exists()
    assert not Path(os.path.expanduser(f"~/.orchestrator-canary-{tmp_path.name}")).exists()
    assert daemons() == [], "the daemons died with their sandboxes"
    assert run_processes(run_id) == []
    assert cluster.leftovers() == []
    assert key_leaks(cluster) == []


def prompted(tid: str, prompt: str) -> dict[str, Any]:
    """A command task that runs its prompt (so a task it adds runs the prompt it is given)."""
    return {"id": tid, "agent": "command", "command": "sh -c {prompt}", "prompt": prompt}


def test_remote_agents_add_tasks_through_the_driver_s_checks(
    cluster: RayCluster, tmp_path: Path
) -> None:
    add = "python -m orchestrator add"
    child = f"{add} grandchild --prompt x --json > deep.json; echo child > child.txt"
    root = (
        f'{add} child --prompt "{child}" --json > added.json; '
        f"{add} bad --prompt x --after nowhere --json > refused.json; true"
    )
    tasks = [prompted("root", root), {"id": "api", "agent": "claude", "prompt": "add a task"}]
    plan = write_plan(tmp_path, tasks, limits={"budget_usd": 5, "max_depth": 1})
    script = [
        tool_use("add_task", {"id": "more", "prompt": "echo more > more.txt", "kind": "command"}),
        text("ok"),
    ]
    with serve_in_thread(script) as api:
        env = driver_env(ANTHROPIC_BASE_URL=api.url)
        args = ("run", str(plan), "--cluster", cluster.address, "--no-live")
        done = orch(tmp_path, *args, timeout=240, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    ws = tmp_path / "ws"
    added = json.loads((ws / "added.json").read_text())
    assert added == {"ok": True, "added": "child", "depth": 1, "parent": "root"}
    refused = json.loads((ws / "refused.json").read_text())
    assert refused["refused"]["rule"] == "unknown-dependency"
    assert (ws / "child.txt").read_text() == "child\n"
    assert (ws / "more.txt").read_text() == "more\n"
    deep = json.loads((ws / "deep.json").read_text())
    assert deep["ok"] is False
    assert "max_depth" in json.dumps(deep), deep  # the child is at depth 1 = max_depth
    agents = {a["id"]: a for a in status(tmp_path)["agents"]}
    assert agents["child"]["node"]
    assert agents["more"]["node"]
    journal = (tmp_path / "agent-responses" / ".run" / "journal.jsonl").read_text()
    records = [json.loads(line) for line in journal.splitlines()]
    by = {r["id"]: r["added_by"] for r in records if r.get("k") == "task" and r.get("added")}
    assert by == {"child": "root", "more": "api"}


def test_attempts_are_spread_by_each_node_s_cpus(cluster: RayCluster, tmp_path: Path) -> None:
    tasks = [shell(f"s{i}", "echo up; sleep 6") for i in range(8)]
    plan = write_plan(
        tmp_path, tasks, sandbox="best-effort", limits={"max_concurrency": 8, "memory": 2**26}
    )
    done = orch(tmp_path, "run", str(plan), "--cluster", cluster.address, "--no-live", timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "run unconfined" in done.stderr or "no sandbox" in done.stderr, done.stderr
    per_node = collections.Counter(a["node"] for a in status(tmp_path)["agents"] if a["node"])
    assert sorted(per_node.values()) == [2, 6], per_node  # 1 CPU and 3 CPUs


def test_a_required_sandbox_that_no_node_can_make_refuses_the_run(
    cluster: RayCluster, tmp_path: Path
) -> None:
    """Last: it kills the second node (the one with bubblewrap)."""
    cluster.kill("second")
    wait_for(lambda: not cluster.processes("second"))
    plan = write_plan(tmp_path, [shell("a", "echo never > a.txt")], sandbox="required")
    done = orch(tmp_path, "run", str(plan), "--cluster", cluster.address, "--no-live", timeout=240)
    assert done.returncode == 3, done.stdout + done.stderr
    lines = [ln for ln in done.stderr.strip().splitlines() if not ln.startswith("warning: ")]
    assert len(lines) == 1, done.stderr
    assert "no node of the Ray cluster" in lines[0]
    assert "sandbox: best-effort" in lines[0], "the hint says how to run it anyway"
    assert not (tmp_path / "ws" / "a.txt").exists()
