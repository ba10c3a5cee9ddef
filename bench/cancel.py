"""B8: cancellation, end to end through a real ``orchestrator run`` process.

A plan of long-running command agents runs under the CLI; once the journal shows every
agent's process group, this process cancels them through the control socket (with
`orchestrator.control.channel.request`, the very client ``orchestrator cancel`` uses) and measures
the time from sending the request to the agent's process being gone (a ``pidfd`` per
process, opened before the request and polled by a thread from before it is sent until it
reports the exit: no sampling delay, no confusion with a recycled pid, and an exit that
comes before the answer is timed when it happens). The process watched is the one whose
pid is the agent's group id (the journal's ``pgid``): in a sandbox, its init, which exits
once every process of the sandbox is gone. ``orchestrator cancel X`` itself is timed too,
for its full round trip including the interpreter start.

Three kinds of children: ``sleep`` (honours SIGTERM), ``sh -c "trap '' TERM; exec sleep"``
(ignores it, so it dies only by SIGKILL after the grace period), and, for ``cancel --all``,
many honouring ones at once.

The floor, measured in the same run: the very command line an agent's ``sleep`` runs as
(the run's sandbox, less the cgroup, which a kill does not wait for), spawned by this process
in a session of its own and stopped with one ``killpg(SIGTERM)`` (one at a time, then all at
once) to the group a run signals (the sandbox's init's, whose pid bubblewrap says on its
info pipe), watched the same way, through the init: what the kernel takes to end a
sandboxed process group, with no orchestrator at all. (Until 2026-11-30 the floor
signalled bubblewrap's own group and watched bubblewrap, which exits before the sandbox
has ended: not the event the orchestrator's rows time, and about 0.3 ms sooner.)
"""

from __future__ import annotations

import functools
import json
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.core import Config, Figure, Stat, ms, percentile
from bench.startup import cli
from orchestrator.control import channel
from orchestrator.plan.model import Plan, Task
from orchestrator.records.journal import load
from orchestrator.records.rundir import RunDir
from orchestrator.sandbox.bwrap import sandbox
from orchestrator.sandbox.confinement import Confinement
from orchestrator.sandbox.decision import decide
from orchestrator.sandbox.support import probe

GOAL_HONOURS = 0.005
GOAL_IGNORES_EXTRA = 0.010
GOAL_ALL_PER_1000 = 0.050
HONOURS = ("sleep", "3600")
IGNORES = ("sh", "-c", "trap '' TERM; exec sleep 3600")


class Orchestrator:
    """``orchestrator run PLAN`` in a child process, with helpers to find its agents."""

    def __init__(self, where: Path, tasks: list[dict[str, Any]], *, grace: float) -> None:
        where.mkdir(parents=True)
        (where / "ws").mkdir()
        plan = {
            "name": "bench-cancel",
            "workspace": "ws",
            "defaults": {"agent": "command", "timeout": 3600, "stall_timeout": 3600},
            "limits": {
                "max_concurrency": len(tasks), "max_agents": len(tasks) + 10,
                "spawn_rate": 100000, "grace": grace,
            },
            "tasks": tasks,
        }  # fmt: skip
        (where / "plan.yaml").write_text(json.dumps(plan))  # JSON is YAML
        self.responses = where / "responses"
        self.rundir = RunDir(self.responses)
        self.log = open(where / "orchestrator.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*cli(), "run", str(where / "plan.yaml"), "--responses", str(self.responses),
             "--no-live"],
            cwd=where, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def wait_running(self, ids: list[str], *, timeout: float = 600.0) -> dict[str, int]:
        """Agent id -> pgid, once the journal shows every one running with its process."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the orchestrator exited early ({self.proc.returncode})")
            if self.rundir.journal.exists():
                agents = load(self.rundir.journal).agents
                pgids = {a: agents.get(a, {}).get("pgid") for a in ids}
                ready = all(isinstance(p, int) for p in pgids.values())
                if ready and self.rundir.socket.exists():
                    return {a: int(p) for a, p in pgids.items() if p is not None}
            _nap(0.05)
        raise RuntimeError("the agents did not all start in time")

    def request(self, payload: dict[str, Any]) -> dict[str, Any]:
        answer = channel.request(self.rundir.socket, payload)
        if answer is None or not answer.get("ok"):
            raise RuntimeError(f"control request {payload} failed: {answer}")
        return answer

    def stop(self, timeout: float = 60.0) -> None:
        try:
            if self.proc.poll() is None and self.rundir.socket.exists():
                channel.request(self.rundir.socket, {"op": "cancel_all", "force": True})
            self.proc.wait(timeout)
        except (subprocess.TimeoutExpired, OSError):
            self.proc.kill()
            self.proc.wait()
        finally:
            self.log.close()


def _nap(seconds: float) -> None:
    time.sleep(seconds)  # noqa: TID251 - a synchronous client polling, not event-loop code


def open_pidfds(pids: list[int]) -> dict[int, int]:
    """pidfd -> pid for every pid; a process already gone is an error (it must be running)."""
    return {os.pidfd_open(pid): pid for pid in pids}


def wait_exits(pidfds: dict[int, int], t0: float, timeout: float = 60.0) -> dict[int, float]:
    """pid -> seconds after ``t0`` at which it exited; closes the pidfds."""
    poller = select.poll()
    for fd in pidfds:
        poller.register(fd, select.POLLIN)
    gone: dict[int, float] = {}
    left = set(pidfds)
    try:
        while left:
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"{len(left)} processes still alive after {timeout:g}s")
            for fd, _ in poller.poll(1000):
                if fd in left:
                    gone[pidfds[fd]] = time.perf_counter() - t0
                    left.discard(fd)
                    poller.unregister(fd)
    finally:
        for fd in pidfds:
            os.close(fd)
    return gone


def timed_exits(pids: list[int], send: Callable[[], object]) -> tuple[float, dict[int, float]]:
    """(round trip of ``send()``, pid -> seconds from the send to its exit).

    The exits are watched by a thread from before the send, so one that comes before the
    answer is timed when it happens, not when the answer is in (for 1,000 agents the
    answer itself takes a while: every stop is recorded before it is given)."""
    fds = open_pidfds(pids)
    box: dict[str, Any] = {}
    started = threading.Event()

    def watch() -> None:
        box["start"] = time.perf_counter()
        started.set()
        try:
            box["gone"] = wait_exits(fds, box["start"])
        except BaseException as exc:  # re-raised by the caller below
            box["error"] = exc

    watcher = threading.Thread(target=watch, name="bench-exits", daemon=True)
    watcher.start()
    started.wait()
    t0 = time.perf_counter()
    try:
        send()
        rt = time.perf_counter() - t0
    finally:
        watcher.join()
    if "error" in box:
        raise box["error"]
    return rt, {pid: box["start"] + at - t0 for pid, at in box["gone"].items()}


def cancel_one(orch: Orchestrator, agent: str, pgid: int) -> tuple[float, float]:
    """(request round trip, request sent -> process gone) for one agent, in seconds."""
    rt, gone = timed_exits([pgid], lambda: orch.request({"op": "cancel", "agents": [agent]}))
    return rt, gone[pgid]


def cancel_cli(orch: Orchestrator, agent: str, pgid: int) -> tuple[float, float]:
    """(``orchestrator cancel`` wall time, its start -> process gone) for one agent."""
    fds = open_pidfds([pgid])
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [*cli(), "cancel", agent, "--responses", str(orch.responses)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    _, err = proc.communicate()
    rt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"orchestrator cancel {agent} failed: {err.decode()[-300:]}")
    return rt, wait_exits(fds, t0)[pgid]


def measure(cfg: Config, want: set[str]) -> dict[str, Figure]:
    fig = Figure("B8", "cancellation")
    grace = cfg.pick(1.0, 0.3)
    n_honour, n_cli, n_ignore = cfg.pick((30, 5, 5), (8, 1, 2))
    n_all = cfg.pick(1000, 100)
    honour = [f"h{i}" for i in range(n_honour + n_cli)]
    ignore = [f"i{i}" for i in range(n_ignore)]
    tasks = [{"id": a, "command": list(HONOURS)} for a in honour]
    tasks += [{"id": a, "command": list(IGNORES)} for a in ignore]
    orch = Orchestrator(cfg.tmp / "cancel-one", tasks, grace=grace)
    try:
        pgids = orch.wait_running(honour + ignore)
        _nap(0.2)  # let the start-up burst settle
        single = [cancel_one(orch, a, pgids[a]) for a in honour[:n_honour]]
        via_cli = [cancel_cli(orch, a, pgids[a]) for a in honour[n_honour:]]
        ignoring = [cancel_one(orch, a, pgids[a]) for a in ignore]
    finally:
        orch.stop()
    floor_one, floor_all = bare_kills(cfg.tmp / "cancel-floor", n_honour, n_all)
    gone = [g for _, g in single]
    p95 = percentile(gone, 95)
    fig.row(
        "cancel -> group gone, honours SIGTERM",
        measured=f"p95 {ms(p95)}",
        baseline=f"floor p95 {ms(percentile(floor_one, 95))}",
        ratio=f"{p95 / max(percentile(floor_one, 95), 1e-9):.2f}x floor",
        goal=f"p95 <= {ms(GOAL_HONOURS)}",
        met=p95 <= GOAL_HONOURS,
        note=(
            f"p50 {ms(percentile(gone, 50))} (floor {ms(percentile(floor_one, 50))}), "
            f"n={len(gone)}; control round trip p50 "
            f"{ms(percentile([r for r, _ in single], 50))}; `orchestrator cancel` command "
            f"{Stat.of(r for r, _ in via_cli).fmt(ms)} (its start -> gone "
            f"{Stat.of(g for _, g in via_cli).fmt(ms)})"
        ),
    )
    ign = Stat.of(g for _, g in ignoring)
    fig.row(
        "cancel -> group gone, ignores SIGTERM",
        measured=ign.fmt(ms),
        baseline=f"grace {ms(grace)}",
        ratio=f"+{ms(ign.median - grace)}",
        goal=f"<= grace + {ms(GOAL_IGNORES_EXTRA)}",
        met=ign.median <= grace + GOAL_IGNORES_EXTRA,
    )
    all_runs = []
    for i in range(cfg.pick(2, 1)):
        all_runs.append(cancel_all(cfg.tmp / f"cancel-all-{i}", n_all, grace))
    last = Stat.of(r["all_gone"] for r in all_runs)
    per_1000 = Stat.of(r["all_gone"] / n_all * 1000 for r in all_runs)
    fig.row(
        f"cancel --all, {n_all:,} agents",
        measured=f"all gone in {last.fmt(ms)}",
        baseline=f"floor: all gone in {ms(floor_all)}",
        ratio=f"{per_1000.fmt(ms)}/1,000; {last.median / max(floor_all, 1e-9):.2f}x floor",
        goal=f"<= {ms(GOAL_ALL_PER_1000)} per 1,000",
        met=per_1000.median <= GOAL_ALL_PER_1000,
        note=f"first gone after {Stat.of(r['first_gone'] for r in all_runs).fmt(ms)}",
    )
    fig.data = {
        "grace": grace,
        "honours_gone": gone,
        "honours_round_trip": [r for r, _ in single],
        "cli_round_trip": [r for r, _ in via_cli],
        "ignores_gone": [g for _, g in ignoring],
        "cancel_all": all_runs,
        "floor_one_gone": floor_one,
        "floor_all_gone": floor_all,
    }
    return {"B8": fig}


def bare_kills(where: Path, n_one: int, n_all: int) -> tuple[list[float], float]:
    """The floor (see the module): seconds from ``killpg(SIGTERM)`` to gone for ``n_one``
    sandboxed ``sleep`` groups stopped one at a time, and for ``n_all`` stopped at once."""
    where.mkdir(parents=True)
    (where / "ws").mkdir()
    conf = _confinement(where)
    one: list[float] = []
    for _ in range(n_one):
        ((proc, init),) = _spawn_sleepers(conf, where, 1)
        one.append(timed_exits([init], functools.partial(os.killpg, init, signal.SIGTERM))[1][init])
        proc.wait()
    started = _spawn_sleepers(conf, where, n_all)
    inits = [init for _, init in started]

    def kill_all() -> None:
        for init in inits:
            os.killpg(init, signal.SIGTERM)

    all_gone = max(timed_exits(inits, kill_all)[1].values())
    for proc, _ in started:
        proc.wait()
    if conf is not None:
        shutil.rmtree(conf.scratch, ignore_errors=True)
    return one, all_gone


def _confinement(where: Path) -> Confinement | None:
    """The sandbox a run here would give a command agent, less its cgroup; None without one."""
    support = probe()
    if not support.can_sandbox:
        return None
    plan = Plan("floor", (Task("a", agent="command", command=HONOURS),), workspace=where / "ws")
    decision = decide(plan, support, responses=where / "responses", scratch=where / "scratch")
    conf = decision.confinement
    if conf is None:
        return None
    return Confinement(bwrap=conf.bwrap, scratch=conf.scratch, protected=conf.protected,
                       hidden=conf.hidden)  # fmt: skip


def _spawn_sleepers(
    conf: Confinement | None, where: Path, n: int
) -> list[tuple[subprocess.Popen[bytes], int]]:
    """``n`` groups of ``sleep 3600`` (sandboxed with ``conf``), once every sleep runs: each
    spawn and the leader of the group its ``sleep`` runs in (the sandbox's init, as for an
    agent: what a run signals and B8 watches)."""
    program = shutil.which(HONOURS[0]) or "/bin/sleep"
    started: list[tuple[subprocess.Popen[bytes], int]] = []
    for _ in range(n):
        argv: list[str] = [program, HONOURS[1]]
        fds: tuple[int, ...] = ()
        line = None
        info = -1
        if conf is not None:
            line = sandbox(conf, argv, cwd=where / "ws", env=dict(os.environ))
            info, info_child = os.pipe()
            at = line.argv.index("--info-fd")
            argv, fds = [*line.argv[: at + 1], str(info_child), *line.argv[at + 2 :]], (info_child,)
        try:
            proc = subprocess.Popen(
                argv, cwd=where / "ws", start_new_session=True, pass_fds=fds,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        finally:
            for fd in fds:
                os.close(fd)
            if line is not None:
                line.release()
        init = proc.pid
        if info >= 0:
            with os.fdopen(info, "rb") as said:  # bubblewrap closes it once it has said all
                init = int(json.loads(said.read())["child-pid"])
        started.append((proc, init))
    deadline = time.monotonic() + 600  # 1,000 bubblewraps starting at once take minutes here
    while not all(_runs_sleep(p.pid) for p, _ in started):
        if time.monotonic() > deadline:
            raise RuntimeError("the floor's sleepers did not all start in time")
        _nap(0.02)
    return started


def _runs_sleep(pid: int) -> bool:
    """Whether a ``sleep`` runs in ``pid`` or among its descendants."""
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/comm") as fh:
                if fh.read().strip() == "sleep":
                    return True
            with open(f"/proc/{p}/task/{p}/children") as fh:
                todo += [int(c) for c in fh.read().split()]
        except (OSError, ValueError):
            continue
    return False


def cancel_all(where: Path, n: int, grace: float) -> dict[str, Any]:
    ids = [f"a{i}" for i in range(n)]
    orch = Orchestrator(where, [{"id": a, "command": list(HONOURS)} for a in ids], grace=grace)
    try:
        pgids = orch.wait_running(ids)
        _nap(0.5)
        rt, gone = timed_exits(list(pgids.values()), lambda: orch.request({"op": "cancel_all"}))
    finally:
        orch.stop()
    return {
        "agents": n,
        "round_trip": rt,
        "first_gone": min(gone.values()),
        "all_gone": max(gone.values()),
    }
