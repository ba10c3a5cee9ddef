"""A two-node Ray cluster on this machine for the cluster tests: `ray start --head` and a
second `ray start --address` (another raylet, the second node), both without the API key,
each started in a session of its own, so every process a node starts is found (by its
session id: Ray's processes rewrite their environment block with their title, so an
environment marker would miss them) and killed at the end."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
COMMON = ("--object-store-memory=80000000", "--disable-usage-stats")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def in_session(sid: int) -> list[int]:
    """Live (not zombie) pids of session ``sid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != b"Z" and int(fields[3]) == sid:
            found.append(int(entry))
    return found


@dataclass
class RayCluster:
    address: str
    temp: Path
    sessions: dict[str, int] = field(default_factory=dict)
    """Node name -> the session id of its ``ray start`` (and of everything it started)."""

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "RAY_"))}
        env.update(
            {"RAY_USAGE_STATS_ENABLED": "0", "TMPDIR": str(self.nodes),
             # a token in ~/.ray (a local ray.init() makes one) must not turn auth on for
             # some processes of this throwaway cluster and not others
             "RAY_AUTH_MODE": "disabled",
             # a node is dead after 10 s without a heartbeat (3 x 0.5 s declared a busy,
             # live node dead, and the run that was opening on it failed)
             "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "10",
             "RAY_health_check_initial_delay_ms": "0"}
        )  # fmt: skip
        return env

    @property
    def nodes(self) -> Path:
        """The nodes' TMPDIR (where their hosts keep checkouts)."""
        return self.temp / "nodes"

    def leftovers(self) -> list[Path]:
        """What hosts left in the nodes' TMPDIR."""
        return sorted(self.nodes.glob("orchestrator-node-*"))

    def processes(self, node: str = "") -> list[int]:
        nodes = [node] if node else list(self.sessions)
        return [pid for n in nodes for pid in in_session(self.sessions[n])]

    def start(self, node: str, *args: str, **env: str) -> None:
        """``ray start ARGS`` as node ``node``, in a session of its own (``env``: added)."""
        proc = subprocess.Popen(
            [RAY, "start", *args], env={**self.env(), **env}, start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.sessions[node] = proc.pid
        out, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"ray start {node} failed: {out.decode(errors='replace')[-2000:]}")

    def join(self, node: str, *, cpus: int = 1, **env: str) -> None:
        """Another node (another raylet on this machine) offering Ray ``cpus`` CPUs."""
        self.start(node, f"--address={self.address}", f"--num-cpus={cpus}", *COMMON, **env)

    def kill(self, node: str) -> None:
        """SIGKILL every process of ``node`` (a node that dies)."""
        for pid in self.processes(node):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def raylet(self, node: str) -> int:
        for pid in self.processes(node):
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if b"/raylet" in fh.read().split(b"\0")[0]:
                    return pid
        raise LookupError(f"no raylet on node {node}")

    def stop(self) -> None:
        """SIGKILL every process of every node; waits (bounded) until they are gone."""
        deadline = time.monotonic() + 30
        while (left := self.processes()) and time.monotonic() < deadline:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)  # noqa: TID251 - a sync fixture waiting for processes to die
        shutil.rmtree(self.temp, ignore_errors=True)


def start_cluster(
    cpus: tuple[int, int] = (1, 1), head_env: Mapping[str, str] | None = None
) -> RayCluster:
    """Head and second node, ``cpus`` CPUs in Ray each (one by default: the machine is
    shared) and a small object store; ``head_env``: added to the head's environment."""
    port = _free_port()
    temp = Path(f"/tmp/rt{uuid.uuid4().hex[:6]}")  # Unix socket paths must stay short
    cluster = RayCluster(f"127.0.0.1:{port}", temp)
    cluster.nodes.mkdir(parents=True)
    try:
        cluster.start(
            "head", "--head", f"--port={port}", "--include-dashboard=false",
            f"--temp-dir={temp}", f"--num-cpus={cpus[0]}", *COMMON, **(head_env or {}),
        )  # fmt: skip
        cluster.join("second", cpus=cpus[1])
    except BaseException:
        cluster.stop()
        raise
    return cluster


def path_without(program: str, where: Path) -> str:
    """A PATH like this one in which ``program`` is not found: ``where`` (made here) holds a
    link to every other program of the PATH's directories (a node without bubblewrap)."""
    where.mkdir(parents=True, exist_ok=True)
    dirs = os.environ.get("PATH", os.defpath).split(os.pathsep)
    for d in dirs:
        with contextlib.suppress(OSError):
            for entry in os.scandir(d):
                link = where / entry.name
                if entry.name != program and not link.exists() and not link.is_symlink():
                    link.symlink_to(entry.path)
    return str(where)
