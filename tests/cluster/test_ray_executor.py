"""Plans on a real two-node Ray cluster on this machine, driven through the real CLI.

Slow (a cluster takes ~20 s to start on 2 cores); skipped, saying why, without the ray extra.
"""

from __future__ import annotations

import importlib.util
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakeapi import serve_in_thread, text, tool_use
from rayhelp import (
    CANARY,
    driver_env,
    host_loops,
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

from bench.raycluster import RayCluster, start_cluster
from orchestrator import ids

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("ray") is None,
        reason="the ray extra is not installed (pip install '.[ray]')",
    ),
    pytest.mark.timeout(300),
]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()
    assert cluster.processes() == [], "processes of the test cluster survived its stop"


def test_a_mixed_plan_runs_on_both_nodes_and_its_changes_come_back(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    tasks = [shell(f"w{i}", f"sleep 1; echo {i} > f{i}.txt; echo wrote {i}") for i in range(4)]
    tasks.append(
        shell(
            "sum",
            "cat f*.txt | wc -l > count.txt; echo counted",
            depends_on=["w0", "w1", "w2", "w3"],
        )
    )
    tasks.append(
        {
            "id": "note",
            "agent": "scripted",
            "script": [{"write": {"path": "note.txt", "content": "hi\n"}}],
        }
    )
    tasks.append({"id": "api", "agent": "claude", "prompt": "write api.txt"})
    plan = write_plan(
        tmp_path, tasks, build={"command": "test -f count.txt && test -f note.txt"},
        limits={"budget_usd": 5},  # sandbox: required (a claude agent): every node confines
    )  # fmt: skip
    script = [tool_use("write_file", {"path": "api.txt", "content": "from claude\n"}), text("ok")]
    with serve_in_thread(script) as api:
        env = driver_env(ANTHROPIC_BASE_URL=api.url)
        args = ("run", str(plan), "--cluster", ray_cluster.address, "--no-live")
        done = orch(tmp_path, *args, timeout=240, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "ws" / "api.txt").read_text() == "from claude\n"
    assert [r.headers.get("x-api-key") for r in api.requests] == [CANARY, CANARY]  # the gateway's
    assert (tmp_path / "ws" / "count.txt").read_text().strip() == "4"
    agents = {a["id"]: a for a in status(tmp_path)["agents"]}
    nodes = {a["node"] for tid, a in agents.items() if tid.startswith("w")}
    assert len(nodes) == 2, agents  # spread over both nodes
    assert agents["api"]["node"]
    assert agents["api"]["tokens_in"] > 0
    assert agents[ids.build_id(1)]["node"] is None  # the build checks the driver's workspace
    said = (tmp_path / "agent-responses" / "w0.md").read_text()
    assert "on node" in said
    assert "landed: " in said, "its change landed through isolation, like a local one's"
    assert f"w0 @{agents['w0']['node']}" in orch(tmp_path, "status").stdout
    assert "| wrote 0" in orch(tmp_path, "tail", "w0").stdout
    (run_id,) = run_ids(tmp_path)
    assert run_processes(run_id) == []
    assert ray_cluster.leftovers() == []
    assert key_leaks(ray_cluster) == []


def test_with_isolation_none_remote_changes_are_applied_to_the_shared_workspace(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    tasks = [shell(f"w{i}", f"echo {i} > f{i}.txt") for i in range(2)]
    tasks.append(shell("sum", "cat f*.txt | wc -l > count.txt", depends_on=["w0", "w1"]))
    plan = write_plan(tmp_path, tasks, isolation="none")
    args = ("run", str(plan), "--cluster", ray_cluster.address, "--no-live")
    done = orch(tmp_path, *args, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "ws" / "count.txt").read_text().strip() == "2"
    assert "landed: " not in (tmp_path / "agent-responses" / "w0.md").read_text()
    assert not list((tmp_path / ".xdg-cache").glob("orchestrator/wt/*")), "no checkouts"


def test_cancel_of_one_remote_agent_with_and_without_grace_and_of_all(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    tasks = [shell(t, "echo up; sleep 120") for t in ("a", "b", "c")]
    tasks.append(shell("d", "trap '' TERM; echo up; sleep 120"))  # ignores SIGTERM
    plan = write_plan(tmp_path, tasks, limits={"grace": 60})
    proc = start_run(tmp_path, plan, ray_cluster.address)
    try:
        wait_for(lambda: all(said(tmp_path, t, "| up") for t in "abcd"))
        (run_id,) = run_ids(tmp_path)
        sleeps = run_processes(run_id)
        assert sleeps  # they run, on the nodes
        assert key_leaks(ray_cluster, sleeps) == []
        loops = host_loops(ray_cluster)
        assert loops, "no node host found"
        assert all(loops.values()), "a node host runs uvloop: each git command forks it"
        assert orch(tmp_path, "cancel", "a").returncode == 0
        wait_for(lambda: states(tmp_path).get("a") == "cancelled")
        assert orch(tmp_path, "cancel", "--force", "d").returncode == 0
        # SIGKILL at once: long before the 60 s grace a SIGTERM-ignoring agent would get
        wait_for(lambda: states(tmp_path).get("d") == "cancelled", timeout=40)
        assert orch(tmp_path, "cancel", "--all").returncode == 0
        assert proc.wait(timeout=120) == 1
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert states(tmp_path) == {t: "cancelled" for t in "abcd"}
    assert run_processes(run_id) == []
    assert ray_cluster.leftovers() == []
    assert "status: cancelled" in (tmp_path / "agent-responses" / "b.md").read_text()


def test_a_driver_that_dies_leaves_the_nodes_clean_and_resume_continues(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    tasks = [shell(t, f"echo up; sleep 4; echo {t} > {t}.txt") for t in ("a", "b")]
    plan = write_plan(tmp_path, tasks)
    proc = start_run(tmp_path, plan, ray_cluster.address)
    try:
        wait_for(lambda: all(said(tmp_path, t, "| up") for t in "ab"))
        (run_id,) = run_ids(tmp_path)
        assert run_processes(run_id)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        wait_for(lambda: run_processes(run_id) == [])  # the job's actors went, their groups too
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    args = ("run", str(plan), "--cluster", ray_cluster.address, "--no-live", "--resume")
    done = orch(tmp_path, *args, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in (tmp_path / "ws").glob("*.txt")) == ["a.txt", "b.txt"]
    assert run_processes(run_id) == []
    assert ray_cluster.leftovers() == []  # what the killed run left, the next one removed


def test_a_node_that_dies_loses_its_attempts_and_they_run_again_elsewhere(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    """Last in this module: it kills the second node's raylet."""
    tasks = [shell(t, f"echo up; sleep 8; echo done > {t}.txt") for t in ("a", "b", "c", "d")]
    plan = write_plan(tmp_path, tasks)
    proc = start_run(tmp_path, plan, ray_cluster.address)
    try:

        def on_second() -> list[str]:
            agents = status(tmp_path).get("agents", [])
            second = [a for a in agents if a.get("node") and a["state"] == "running"]
            return second if len({a["node"] for a in second}) == 2 else []

        running = wait_for(on_second)
        os.kill(ray_cluster.raylet("second"), signal.SIGKILL)
        proc.wait(timeout=200)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, (tmp_path / "orchestrator.log").read_text()
    agents = status(tmp_path)["agents"]
    lost = [a for a in agents if a["state"] == "lost"]
    assert lost, agents
    for agent in lost:
        retry = next(
            a for a in agents if a["task"] == agent["task"] and a["attempt"] > agent["attempt"]
        )
        assert retry["state"] == "succeeded"
        assert retry["node"] != agent["node"]
    assert sorted(p.name for p in (tmp_path / "ws").glob("*.txt")) == [
        "a.txt",
        "b.txt",
        "c.txt",
        "d.txt",
    ]
    assert running
    (run_id,) = run_ids(tmp_path)
    assert run_processes(run_id) == []


def test_a_node_that_holds_the_api_key_is_refused_before_anything_starts(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    """Last: it adds a node started with the key, and kills it at the end."""
    ray_cluster.join("keyed", ANTHROPIC_API_KEY=CANARY)
    try:
        plan = write_plan(tmp_path, [shell("a", "echo never > a.txt")])
        args = ("run", str(plan), "--cluster", ray_cluster.address, "--no-live")
        done = orch(tmp_path, *args, timeout=240)
    finally:
        ray_cluster.kill("keyed")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "holds ANTHROPIC_API_KEY in its environment" in done.stderr
    lines = [ln for ln in done.stderr.strip().splitlines() if not ln.startswith("warning: ")]
    assert len(lines) == 1, done.stderr  # no traceback
    assert CANARY not in done.stderr + done.stdout
    assert not (tmp_path / "ws" / "a.txt").exists()
