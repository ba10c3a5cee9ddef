"""Drive the real `orchestrator` command in subprocesses: plans on disk, runs in the background.

Shared by the CLI-level tests (cli, control, signals, resume, monitor, watch). A `Fleet` owns
one working directory and every orchestrator it started there; `Fleet.close` kills what is
left (the orchestrators, then every process marked with a run id the journal ever named), so
a failing test never leaks processes into the next one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from conftest import processes_with_marker

from orchestrator.process import orphans
from orchestrator.records.journal import JournalState, load

ORCH = (sys.executable, "-m", "orchestrator")
STARTING = 30.0
"""Seconds a started `orchestrator run` may take to show its first records, and the default
bound of every event a test waits for here (`poll`, `wait_running`, `wait_state`): a bound,
not a figure; a test that passes never waits it out. A run needs about 0.8 s of CPU to get
there (imports, checks); on a 2-core machine at load 19 that was 5 s of wall time for a whole
trivial run, and 10 s was seen exceeded (the stop soak's one trial in 200 that "timed out
waiting for the run id")."""
T = TypeVar("T")


def quiet_env(**extra: str) -> dict[str, str]:
    """Our environment without the markers of an enclosing run, an API key or colours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRATOR_", "ANTHROPIC_"))}
    env.update(NO_COLOR="1", COLUMNS="200", TERM="dumb", PYTHONDONTWRITEBYTECODE="1")
    env.update(extra)
    return env


def task(tid: str, *steps: dict[str, Any], deps: tuple[str, ...] = (), **kw: Any) -> dict[str, Any]:
    """A scripted task as the plan file spells it."""
    out: dict[str, Any] = {"id": tid, "agent": "scripted", "script": list(steps) or [{"say": tid}]}
    if deps:
        out["depends_on"] = list(deps)
    out.update(kw)
    return out


def write_plan(path: Path, tasks: list[dict[str, Any]], **top: Any) -> Path:
    """A YAML plan whose workspace is ``ws/`` beside it (made by the run), with a short grace
    period."""
    limits = {"grace": 0.5, "max_concurrency": 16, **top.pop("limits", {})}
    # These plans are about processes, signals and records, and count what ran in shared
    # files (ran.txt): they keep the shared directory. tests/isolation covers the default.
    top.setdefault("isolation", "none")
    doc = {"name": path.stem, "workspace": "ws", "create_workspace": True, "limits": limits}
    doc |= {**top, "tasks": tasks}
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def poll(check: Callable[[], T | None], *, timeout: float = STARTING, what: str = "") -> T:
    """Call ``check`` until it returns something true; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what or check}")
        time.sleep(0.01)  # noqa: TID251 - a sync test polling files written by a subprocess


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and mtime: equal trees mean nothing was written."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        out[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def live_in_group(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that are still alive (zombies, already dead, excluded)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            found.append(int(name))
    return found


def sleepers(run_id: str) -> set[str]:
    """The agents of the run that have a ``sleep`` process running (an agent that is
    ``running`` in the journal may not have reached its ``sleep`` yet)."""
    found = set()
    for pid in processes_with_marker(run_id):
        try:
            with open(f"/proc/{pid}/comm") as fh:
                if fh.read().strip() != "sleep":
                    continue
            with open(f"/proc/{pid}/environ", "rb") as fh:
                env = dict(v.split(b"=", 1) for v in fh.read().split(b"\0") if b"=" in v)
        except OSError:
            continue
        found.add(env.get(b"ORCHESTRATOR_AGENT_ID", b"").decode())
    return found


def ppid_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as fh:
        return int(fh.read().rsplit(b")", 1)[-1].split()[1])


def guard_of(pid: int) -> int:
    """The pid of the guard (`orchestrator.process.guard`) the orchestrator ``pid`` started."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            parent = ppid_of(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
        if b"orchestrator.process.guard" in command and parent == pid:
            return int(entry.name)
    raise AssertionError(f"orchestrator {pid} has no guard")


def kill_with_its_guard(run: subprocess.Popen[str]) -> None:
    """SIGKILL an orchestrator and its guard first: what its unconfined agents started is
    left running, as after a `pkill -9 -f orchestrator`, for `status` or `cancel` to find."""
    os.kill(guard_of(run.pid), signal.SIGKILL)
    run.kill()
    run.wait()


def ends_with_status(path: Path) -> bool:
    lines = path.read_text(encoding="utf-8", errors="replace").rstrip("\n").split("\n")
    return lines[-1].startswith("status: ")


@dataclass
class Done:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


class Fleet:
    """Orchestrator commands run in ``cwd`` (a fresh directory); see the module docstring."""

    def __init__(self, base: Path) -> None:
        self.cwd = base / "proj"
        self.cwd.mkdir()
        self.logs = base / "logs"
        self.logs.mkdir()
        self.procs: list[subprocess.Popen[str]] = []
        self.run_ids: set[str] = set()
        self._logs: dict[int, tuple[Path, Path]] = {}

    @property
    def responses(self) -> Path:
        return self.cwd / "agent-responses"

    @property
    def workspace(self) -> Path:
        return self.cwd / "ws"

    def plan(self, *tasks: dict[str, Any], name: str = "plan", **top: Any) -> Path:
        return write_plan(self.cwd / f"{name}.yaml", list(tasks), **top)

    def start(
        self, *args: str, pipe: bool = False, env: dict[str, str] | None = None
    ) -> subprocess.Popen[str]:
        """Start ``orchestrator ARGS`` in the background (own session, output to log files)."""
        n = len(self.procs) + 1
        logs = (self.logs / f"{n}.out", self.logs / f"{n}.err")
        with open(logs[0], "w") as out, open(logs[1], "w") as err:
            proc = subprocess.Popen(
                [*ORCH, *args],
                cwd=self.cwd,
                env=env or quiet_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipe else out,
                stderr=subprocess.PIPE if pipe else err,
                text=True,
                start_new_session=True,
            )
        self.procs.append(proc)
        self._logs[proc.pid] = logs
        return proc

    def finish(self, proc: subprocess.Popen[str], *, timeout: float = 30.0) -> Done:
        """Wait for a started command; its exit code and output."""
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise AssertionError(f"{proc.args!r} did not end within {timeout:g}s") from None
        if out is None:
            out, err = (p.read_text(errors="replace") for p in self._logs[proc.pid])
        return Done(proc.returncode, out, err)

    def cli(self, *args: str, timeout: float = 30.0, env: dict[str, str] | None = None) -> Done:
        """Run ``orchestrator ARGS`` to its end."""
        return self.finish(self.start(*args, pipe=True, env=env), timeout=timeout)

    def call(self, *args: str) -> Done:
        """Run ``orchestrator ARGS`` in this process (Typer's runner, cwd switched for it).

        For quick one-shot commands (status, peek, cancel, ...); what only a real process
        shows (signals, exit through ``main``, imports) goes through `cli`.
        """
        from typer.testing import CliRunner

        from orchestrator.cli import app

        here = os.getcwd()
        os.chdir(self.cwd)
        try:
            result = CliRunner().invoke(app, list(args))
        finally:
            os.chdir(here)
        if not isinstance(result.exception, SystemExit | None):
            raise result.exception
        return Done(result.exit_code, result.stdout, result.stderr)

    def journal(self) -> JournalState:
        state = load(self.responses / ".run" / "journal.jsonl")
        run_id = state.run.get("run_id")
        if isinstance(run_id, str) and run_id:
            self.run_ids.add(run_id)
        return state

    def run_id(self) -> str:
        def started() -> str | None:
            return self.journal().run.get("run_id")

        return poll(started, timeout=STARTING, what="the run id in the journal")

    def wait_running(self, *agents: str, timeout: float = STARTING) -> JournalState:
        """Until the journal shows each agent running with its process group recorded."""

        def ready() -> JournalState | None:
            state = self.journal()
            for agent in agents:
                rec = state.agents.get(agent, {})
                if rec.get("state") != "running" or not rec.get("pgid"):
                    return None
            return state

        return poll(ready, timeout=timeout, what=f"{', '.join(agents)} running")

    def wait_state(self, agent: str, *states: str, timeout: float = STARTING) -> str:
        def reached() -> str | None:
            state = self.journal().agents.get(agent, {}).get("state")
            return state if state in states else None

        return poll(reached, timeout=timeout, what=f"{agent} in {states}")

    def leftovers(self) -> list[int]:
        """Live processes (zombies excluded) of every run this fleet saw."""
        self.journal_if_any()
        return [pid for run_id in self.run_ids for pid in processes_with_marker(run_id)]

    def journal_if_any(self) -> None:
        if (self.responses / ".run" / "journal.jsonl").exists():
            self.journal()

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self.journal_if_any()
        for run_id in self.run_ids:
            orphans.sweep_run(run_id)
        poll(lambda: not self.leftovers(), timeout=5, what="leftovers to die")
