"""Signals to the orchestrator: graceful stops, the second Ctrl-C, and SIGKILL with no orphans.

Each test runs a real `orchestrator run` in its own session and signals that process only.
"No orphans" is checked by scanning /proc for the run id the journal recorded.
"""

from __future__ import annotations

import functools
import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clirun import (
    Fleet,
    ends_with_status,
    guard_of,
    kill_with_its_guard,
    poll,
    ppid_of,
    sleepers,
    task,
)
from conftest import processes_with_marker

from orchestrator.events import TERMINAL_STATES


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.close()


def forever(tid: str, shell: str = "sleep 30", **kw: Any) -> dict[str, Any]:
    return task(tid, {"say": f"{tid} starting"}, {"run": f"echo {tid} is up; {shell}"}, **kw)


STUBBORN = "trap '' TERM; while :; do sleep 0.05; done"
ESCAPES = "setsid sleep 30 & (sleep 30 &); sleep 30"


def armed(path: Path) -> bool:
    return path.exists() and "| armed" in path.read_text(encoding="utf-8")


def progress_files(fleet: Fleet) -> list[Path]:
    return [p for p in fleet.responses.glob("*.md") if p.name != "REPORT.md"]


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)]
)
def test_a_signal_stops_the_run_gracefully_with_its_exit_code(
    fleet: Fleet, signum: int, code: int
) -> None:
    fleet.plan(forever("a"), forever("b", ESCAPES), task("c", deps=("a",)), task("d"))
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running("a", "b")
    run_id = fleet.run_id()
    poll(lambda: len(processes_with_marker(run_id)) >= 5, what="b's escaped descendants")
    run.send_signal(signum)
    done = fleet.finish(run, timeout=15)
    assert done.code == code, done.err
    assert "Traceback" not in done.text
    state = fleet.journal()
    assert state.run["state"] == "interrupted"
    assert state.run["exit_code"] == code
    for name in ("a", "b"):
        assert state.agents[name]["state"] == "cancelled"
        assert signal.Signals(signum).name in state.agents[name]["reason"]
    assert state.tasks["c"]["state"] in ("cancelled", "skipped")
    for path in progress_files(fleet):
        assert ends_with_status(path), path.name
    report = (fleet.responses / "REPORT.md").read_text(encoding="utf-8")
    assert "- state: interrupted" in report
    assert f"interrupted by {signal.Signals(signum).name}" in report
    assert not processes_with_marker(run_id), "no process of the run outlives it"


def test_a_second_sigint_kills_at_once_even_with_a_long_grace(fleet: Fleet) -> None:
    arming = "trap '' TERM; echo armed; while :; do sleep 0.05; done"
    fleet.plan(task("a", {"run": arming}), task("b", {"run": arming}), limits={"grace": 60})
    run = fleet.start("run", "plan.yaml", "--no-live")
    for path in (fleet.responses / "a.md", fleet.responses / "b.md"):
        # running is not yet ignoring SIGTERM: wait until the trap is set
        poll(functools.partial(armed, path), what=f"{path.name} armed")
    run_id = fleet.run_id()
    run.send_signal(signal.SIGINT)
    poll(lambda: fleet.journal().run.get("fence"), what="the fence after the first SIGINT")
    assert run.poll() is None, "the first SIGINT waits out the grace"
    shown = fleet.call("status")
    # not a terminal: plain rows "task  state  agent ..."
    rows = [line.split() for line in shown.out.splitlines() if line.startswith(("a ", "b "))]
    assert [row[1] for row in rows] == ["stopping", "stopping"], shown.out
    shown_text = " ".join(shown.out.split())  # the footer may wrap at the terminal width
    assert "stopping 2 agent(s), up to 60s grace; Ctrl-C again kills at once" in shown_text
    said = fleet.logs / "1.out"
    poll(lambda: said.read_text().count("stopping: interrupted by SIGINT") == 2, what="the lines")
    t0 = time.monotonic()
    run.send_signal(signal.SIGINT)
    done = fleet.finish(run, timeout=30)
    assert time.monotonic() - t0 < 20  # against a 60 s grace
    assert done.code == 130
    assert not processes_with_marker(run_id)
    for path in progress_files(fleet):
        assert ends_with_status(path), path.name


def test_descendants_that_double_fork_are_adopted_and_stopped_with_the_run(
    fleet: Fleet,
) -> None:
    fleet.plan(
        task("spawner", {"run": "setsid sleep 30 & (sleep 31 &); echo spawned"}),
        forever("gate", "while [ ! -e go ]; do sleep 0.02; done"),
        sandbox="off",  # in a sandbox they die with it (tests/sandbox): no one to adopt
    )
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_state("spawner", "succeeded")
    run_id = fleet.run_id()
    orphans = poll(
        lambda: [p for p in processes_with_marker(run_id) if agent_env(p) == "spawner"],
        what="the spawner's orphans",
    )
    assert {ppid_of(p) for p in orphans} == {run.pid}, "the subreaper adopted them"
    (fleet.workspace / "go").touch()
    assert fleet.finish(run).code == 0
    assert not processes_with_marker(run_id)


def agent_env(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            for item in fh.read().split(b"\0"):
                if item.startswith(b"ORCHESTRATOR_AGENT_ID="):
                    return item.split(b"=", 1)[1].decode()
    except OSError:
        pass
    return ""


def running_with_escapes(fleet: Fleet) -> tuple[subprocess.Popen[str], str]:
    """A run of two agents, one whose descendants left its group, once they all run."""
    # Unconfined: in a sandbox nothing is left to stop (tests/sandbox/test_escapes.py).
    fleet.plan(forever("a"), forever("b", ESCAPES), sandbox="off")
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running("a", "b")
    run_id = fleet.run_id()
    poll(lambda: len(processes_with_marker(run_id)) >= 5, what="b's escaped descendants")
    poll(lambda: sleepers(run_id) == {"a", "b"}, what="both agents' sleeps")
    return run, run_id


def test_after_sigkill_the_guard_stops_every_process_of_the_run(fleet: Fleet) -> None:
    run, run_id = running_with_escapes(fleet)
    guard = fleet.journal().run["guard"]
    assert guard["pid"] == guard_of(run.pid), "the run's record names its guard"
    run.kill()
    run.wait()
    poll(
        lambda: not processes_with_marker(run_id),
        timeout=5,
        what="the guard to stop the children and the descendants that left their group",
    )
    done = fleet.cli("status", "--json")
    assert done.code == 0
    shown = json.loads(done.out)
    assert shown["run"]["state"] == "interrupted"
    assert {a["id"]: a["state"] for a in shown["agents"]} == {"a": "lost", "b": "lost"}
    assert "stopped" not in done.err, "nothing was left to stop"
    assert "lost with its orchestrator: a, b" in done.err
    assert "hint: continue it with orchestrator run plan.yaml --resume" in done.err


def test_with_the_guard_killed_too_status_stops_the_leftovers(fleet: Fleet) -> None:
    run, run_id = running_with_escapes(fleet)
    kill_with_its_guard(run)
    assert processes_with_marker(run_id), "with no guard they outlive a SIGKILL until a look"
    done = fleet.cli("status", "--json")
    assert done.code == 0
    shown = json.loads(done.out)
    assert shown["run"]["state"] == "interrupted"
    assert {a["id"]: a["state"] for a in shown["agents"]} == {"a": "lost", "b": "lost"}
    assert "stopped what its agents left running: a, b" in done.err
    assert "hint: continue it with orchestrator run plan.yaml --resume" in done.err
    poll(lambda: not processes_with_marker(run_id), timeout=5, what="status to stop leftovers")
    again = fleet.cli("status")
    assert again.code == 0
    assert "stopped" not in again.err, "nothing left the second time"
    assert "lost with its orchestrator: a, b" in again.err
    assert "orchestrator run plan.yaml --resume" in again.err
    rows = [line.split() for line in again.out.splitlines() if line.startswith(("a ", "b "))]
    assert [row[1] for row in rows] == ["lost", "lost"], again.out
    assert not [row for row in rows if "running" in row]
    assert ", 0 running," in again.out


def test_status_leaves_a_live_run_alone(fleet: Fleet) -> None:
    fleet.plan(forever("a"))
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running("a")
    run_id = fleet.run_id()
    before = processes_with_marker(run_id)
    assert fleet.call("status").code == 0
    assert set(before) <= set(processes_with_marker(run_id)), "status stopped nothing"
    assert fleet.call("cancel", "--all").code == 0
    assert fleet.finish(run).code == 1


# --- random signals at random moments -----------------------------------------------------------


def random_tasks(rng: random.Random) -> list[dict[str, Any]]:
    shapes: list[list[dict[str, Any]]] = [
        [{"run": f"sleep {rng.uniform(0.05, 0.5):.2f}"}],
        [{"run": STUBBORN.replace("while :", f"for i in $(seq {rng.randint(2, 12)})")
          .replace("; done", "; done")}],
        [{"run": "setsid sleep 30 & sleep 0.2"}],
        [{"run": "(sleep 30 &); sleep 0.3"}],
        [{"sleep": 0.2}, {"say": "done"}],
        [{"run": "for i in $(seq 300); do echo $i; done"}],
    ]  # fmt: skip
    tasks: list[dict[str, Any]] = []
    for i in range(rng.randint(2, 6)):
        deps = (tasks[-1]["id"],) if tasks and rng.random() < 0.3 else ()
        tasks.append(task(f"t{i}", *rng.choice(shapes), deps=deps))
    return tasks


def kill_scenario(fleet: Fleet, seed: int) -> None:
    rng = random.Random(seed)
    fleet.plan(*random_tasks(rng), limits={"grace": 0.3})
    run = fleet.start("run", "plan.yaml", "--no-live")
    run_id = fleet.run_id()
    time.sleep(rng.uniform(0, 0.6))  # noqa: TID251 - a random moment is the point here
    signum = rng.choice([signal.SIGINT, signal.SIGTERM, signal.SIGKILL, signal.SIGKILL])
    if run.poll() is None:
        run.send_signal(signum)
    done = fleet.finish(run, timeout=20)
    # Before its handlers are up (or once they are down) a signal kills it the default way:
    # -signum here, 128 + signum in a shell, the same as a handled one.
    assert done.code in (0, 1, 128 + signum, -signum), (seed, done)
    assert "Traceback" not in done.err, (seed, done.err)
    state = fleet.journal()
    assert state.run["run_id"] == run_id
    if done.code < 0:
        assert fleet.call("status").code == 0
    else:
        assert state.run["state"] in ("finished", "interrupted"), seed
        for tid, rec in state.tasks.items():
            assert rec["state"] in TERMINAL_STATES, (seed, tid)
        for path in progress_files(fleet):
            assert ends_with_status(path), (seed, path.name)
    poll(lambda: not processes_with_marker(run_id), timeout=5, what=f"seed {seed} leftovers")


@pytest.mark.parametrize("seed", range(6))
def test_random_signals_leave_no_process_of_the_run(fleet: Fleet, seed: int) -> None:
    kill_scenario(fleet, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 160))
def test_random_signals_soak(fleet: Fleet, seed: int) -> None:
    kill_scenario(fleet, seed)


def test_ctrl_c_before_the_run_s_handlers_ends_by_sigint_without_a_traceback() -> None:
    # a KeyboardInterrupt anywhere before a run installs its handlers (loading the plan,
    # preflight): the program ends by SIGINT as the shell expects, never with a traceback
    code = (
        "import orchestrator.cli as cli\n"
        "def interrupted():\n"
        "    raise KeyboardInterrupt\n"
        "cli.app = interrupted\n"
        "cli.main()\n"
    )
    done = subprocess.run(  # noqa: TID251 - a sync test, no loop here
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == -signal.SIGINT
    assert "Traceback" not in done.stderr
