"""Helpers for the cluster tests (tests/cluster): the CLI against a Ray cluster on this
machine, its run's records, and scans of the nodes for leftovers and the canary key."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from fakes import marked_pids

from bench.raycluster import RayCluster

ORCH = (sys.executable, "-m", "orchestrator")
CANARY = "sk-ant-canary-9f8e7d6c5b4a-cluster"


def driver_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRATOR_", "RAY_"))}
    env.update(ANTHROPIC_API_KEY=CANARY, NO_COLOR="1", COLUMNS="200", RAY_USAGE_STATS_ENABLED="0")
    env.update(RAY_AUTH_MODE="disabled")  # as the test cluster (`RayCluster.env`)
    env.update(extra)
    return env


def write_plan(tmp: Path, tasks: list[dict[str, Any]], **extra: Any) -> Path:
    (tmp / "ws").mkdir(exist_ok=True)
    plan = {"name": "cluster", "workspace": "ws", "defaults": {"agent": "command"}, "tasks": tasks}
    plan.update(extra)
    path = tmp / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


def shell(tid: str, script: str, **kw: Any) -> dict[str, Any]:
    return {"id": tid, "command": script, **kw}  # a string command runs in a shell


def orch(
    tmp: Path, *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """One orchestrator command in ``tmp``, to its end (these tests are synchronous)."""
    return subprocess.run(  # noqa: TID251 - a sync test, no event loop here
        [*ORCH, *args], cwd=tmp, env=env or driver_env(), capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def status(tmp: Path) -> dict[str, Any]:
    """`status --json`; empty before the run has a journal."""
    done = orch(tmp, "status", "--json")
    return dict(json.loads(done.stdout)) if done.returncode == 0 else {}


def states(tmp: Path) -> dict[str, str]:
    return {a["id"]: a["state"] for a in status(tmp).get("agents", [])}


def wait_for(what: Any, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(0.2)  # noqa: TID251 - polls a run in another process; no event loop here
    raise AssertionError("timed out waiting")


def run_ids(tmp: Path) -> list[str]:
    journal = tmp / "agent-responses" / ".run" / "journal.jsonl"
    ids = set()
    for line in journal.read_text().splitlines() if journal.exists() else []:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("run_id"):
            ids.add(rec["run_id"])
    return sorted(ids)


def run_processes(run_id: str) -> list[int]:
    return marked_pids(run_id)


def start_run(tmp: Path, plan: Path, address: str) -> subprocess.Popen[bytes]:
    """``run --cluster`` in the background, its output in ``orchestrator.log``."""
    with (tmp / "orchestrator.log").open("ab") as out:
        return subprocess.Popen(
            [*ORCH, "run", str(plan), "--cluster", address, "--no-live"],
            cwd=tmp, env=driver_env(), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def said(tmp: Path, agent: str, text: str) -> bool:
    path = tmp / "agent-responses" / f"{agent}.md"
    return path.exists() and text in path.read_text()


def key_leaks(cluster: RayCluster, agents: list[int] = ()) -> list[str]:  # type: ignore[assignment]
    """Where the canary key (or its reverse or base64) shows up on the nodes: the environment
    of their processes and of the agents, and every file under their temp directories."""
    forms = [CANARY.encode(), CANARY[::-1].encode(), base64.b64encode(CANARY.encode())]
    leaks = []
    for pid in [*cluster.processes(), *agents]:
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if any(f in env for f in forms):
            leaks.append(f"environ of pid {pid}")
    for root in (cluster.temp,):
        for path in root.rglob("*"):
            try:
                data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
            except OSError:
                continue
            if any(f in data for f in forms):
                leaks.append(str(path))
    return leaks


def host_loops(cluster: RayCluster) -> dict[int, bool]:
    """The run's node hosts (their actors' processes) and whether each runs asyncio's own
    event loop (Ray's is uvloop when installed, which forks the whole actor for every child)."""
    hosts = {}
    for pid in cluster.processes():
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if title.startswith(b"ray::NodeHost"):
            hosts[pid] = b"RAY_USE_UVLOOP=0" in env
    return hosts
