"""The monitors from another terminal: status, peek, tail, wait, and the one-orchestrator lock.

Every test drives a real `orchestrator run` in the background. Agents wait on gate files in
the workspace (``go-<name>``), so a test decides exactly when each one finishes: it
synchronises on files and the journal, never on sleeps.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from clirun import Fleet, ends_with_status, poll, task

from orchestrator.errors import RunLockedError
from orchestrator.records.rundir import RunDir, RunLock, holder_pid, is_locked
from orchestrator.view.snapshot import AGENT_KEYS


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.close()


def gated(tid: str, *, deps: tuple[str, ...] = (), then: str = "") -> dict[str, object]:
    """A task that says hello, then waits until the test creates ``ws/go-<tid>``."""
    steps: list[dict[str, object]] = [
        {"say": f"{tid} waiting"},
        {"run": f"echo {tid} is up; while [ ! -e go-{tid} ]; do sleep 0.02; done"},
    ]
    if then:
        steps.append({then.split(":", 1)[0]: then.split(":", 1)[1].strip()})
    return task(tid, *steps, deps=deps)


def release(fleet: Fleet, *tids: str) -> None:
    for tid in tids:
        (fleet.workspace / f"go-{tid}").touch()


def test_status_json_has_exactly_the_keys_of_the_design_while_running_and_after(
    fleet: Fleet,
) -> None:
    fleet.plan(gated("a"), task("b", deps=("a",)))
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running("a")
    live = json.loads(fleet.call("status", "--json").out)
    assert set(live) == {"run", "agents", "board", "totals"}
    board = {row["id"]: row for row in live["board"]}
    assert (board["a"]["state"], board["b"]["state"]) == ("running", "waiting")
    assert board["b"]["waiting_on"] == ["a"], "a task not started says what it waits on"
    assert (live["totals"]["tasks"], live["totals"]["done"], live["totals"]["running"]) == (2, 0, 1)
    assert live["totals"]["elapsed"] >= 0
    assert set(live["run"]) == {
        "plan", "state", "started", "ended", "pid", "sandbox", "sandbox_warnings",
    }  # fmt: skip
    assert live["run"]["sandbox"].startswith("best-effort: ")
    assert live["run"]["state"] == "running"
    assert live["run"]["pid"] == run.pid
    assert live["run"]["ended"] is None
    (a,) = live["agents"]
    assert list(a) == list(AGENT_KEYS)
    assert set(a) == {
        "id", "task", "kind", "state", "parent", "attempt", "pid", "started", "ended",
        "tokens_in", "tokens_out", "cost_usd", "last_line", "node",
    }  # fmt: skip
    assert (a["id"], a["task"], a["kind"], a["state"]) == ("a", "a", "scripted", "running")
    assert a["node"] is None  # it runs on this machine
    assert isinstance(a["pid"], int)
    assert a["last_line"], "a running agent shows what it said last"
    release(fleet, "a")
    assert fleet.finish(run).code == 0
    after = json.loads(fleet.call("status", "--json").out)
    assert after["run"]["state"] == "finished"
    assert isinstance(after["run"]["ended"], float)
    assert [(x["id"], x["state"]) for x in after["agents"]] == [
        ("a", "succeeded"),
        ("b", "succeeded"),
    ]
    assert (after["totals"]["succeeded"], after["totals"]["done"]) == (2, 2)
    for agent in after["agents"]:
        assert list(agent) == list(AGENT_KEYS)


def test_status_as_a_table_while_running(fleet: Fleet) -> None:
    fleet.plan(gated("a"))
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running("a")
    done = fleet.cli("status")
    assert done.code == 0
    assert "running" in done.out
    assert "a is up" in done.out
    release(fleet, "a")
    assert fleet.finish(run).code == 0


def test_status_without_any_run_is_a_usage_error_with_a_hint(fleet: Fleet) -> None:
    done = fleet.call("status", "--json")
    assert done.code == 2
    assert "hint:" in done.err
    assert "Traceback" not in done.text
    assert not fleet.responses.exists()


def test_peek_never_blocks_and_shows_the_last_lines(fleet: Fleet) -> None:
    fleet.plan(gated("a"))
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running("a")
    poll(lambda: "a is up" in (fleet.responses / "a.md").read_text(), what="a's output")
    t0 = time.monotonic()
    done = fleet.cli("peek", "a", "-n", "2", timeout=20)  # a's gate never opens meanwhile
    assert time.monotonic() - t0 < 20
    assert done.code == 0
    lines = done.out.splitlines()
    assert len(lines) == 2
    assert lines[-1].endswith("| a is up")
    release(fleet, "a")
    assert fleet.finish(run).code == 0
    ended = fleet.call("peek", "a", "-n", "1")
    assert ended.out.startswith("status: succeeded")


def test_peek_tail_and_wait_refuse_an_unknown_agent_with_exit_2(fleet: Fleet) -> None:
    fleet.plan(task("a"))
    assert fleet.cli("run", "plan.yaml", "--no-live").code == 0
    for args in (("peek", "nope"), ("tail", "nope"), ("wait", "nope"), ("wait", "a", "nope"),
                 ("peek", "../plan"), ("tail", "-f", "../../etc/passwd")):  # fmt: skip
        done = fleet.call(*args)
        assert done.code == 2, args
        assert "unknown agent" in done.err
    real = fleet.cli("wait", "nope")
    assert real.code == 2
    assert real.err == "error: unknown agent 'nope'\n"


def test_peek_tail_and_wait_accept_a_task_before_it_starts(fleet: Fleet) -> None:
    fleet.plan(
        gated("a"), task("b", deps=("a",)), gated("c"), task("d"), limits={"max_concurrency": 2}
    )
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running("a", "c")
    blocked = fleet.call("peek", "b")
    assert (blocked.code, blocked.out) == (0, "b: blocked on a (not started yet)\n")
    queued = fleet.call("tail", "d")
    assert (queued.code, queued.out) == (0, "d: queued (not started yet)\n")
    follower = fleet.start("tail", "-f", "b", pipe=True)
    waiter = fleet.start("wait", "b", pipe=True)
    with pytest.raises(subprocess.TimeoutExpired):
        waiter.wait(timeout=0.3)  # blocks: b has not even started
    assert follower.poll() is None, "tail -f waits for the file"
    release(fleet, "a", "c")
    assert fleet.finish(waiter, timeout=10).out == "b: succeeded\n"
    followed = fleet.finish(follower, timeout=10)
    assert followed.code == 0
    assert followed.out.startswith("# b\n")
    assert followed.out.rstrip("\n").split("\n")[-1].startswith("status: succeeded")
    assert fleet.finish(run).code == 0


def test_tail_f_of_a_task_follows_it_through_its_retry(fleet: Fleet) -> None:
    fleet.plan(
        task("a", {"run": "echo first; while [ ! -e go-a ]; do sleep 0.02; done"},
             {"block": "need the config"}, retry_script=[{"say": "second attempt"}]),
        fixer={"agent": "scripted", "script": [{"say": "fixed the config"}]},
    )  # fmt: skip
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running("a")
    follower = fleet.start("tail", "-f", "a", pipe=True)
    assert follower.stdout is not None
    assert follower.stdout.readline() == "# a\n"
    release(fleet, "a")
    followed = fleet.finish(follower, timeout=10)
    assert followed.code == 0
    text = followed.out
    assert "BLOCKED: need the config" in text
    assert "# a+2\n" in text, "after a's status line, its retry a+2"
    assert text.index("# a+2") > text.index("status: blocked")
    assert text.rstrip("\n").split("\n")[-1].startswith("status: succeeded")
    assert fleet.finish(run).code == 0


def test_peek_of_a_task_that_never_started_after_a_kill_says_so(fleet: Fleet) -> None:
    fleet.plan(gated("a"), task("b", deps=("a",)))
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running("a")
    run.kill()
    run.wait()
    done = fleet.call("peek", "b")
    assert done.code == 0
    assert done.out == "b: not started (blocked on a when its orchestrator went away)\n"
    assert fleet.call("wait", "b").out == "b: lost\n"


def test_tail_prints_the_file_and_tail_f_follows_until_the_status_line(fleet: Fleet) -> None:
    fleet.plan(gated("a", then="say: after the gate"))
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running("a")
    poll(lambda: "a is up" in (fleet.responses / "a.md").read_text(), what="a's output")
    snapshot = fleet.call("tail", "a")
    assert snapshot.code == 0
    assert snapshot.out.startswith("# a\n")
    assert "a is up" in snapshot.out
    assert "status:" not in snapshot.out
    follower = fleet.start("tail", "-f", "a", pipe=True)
    assert follower.stdout is not None
    first = follower.stdout.readline()
    assert first == "# a\n"
    assert follower.poll() is None, "tail -f keeps following a running agent"
    release(fleet, "a")
    rest = fleet.finish(follower, timeout=10)
    assert rest.code == 0
    assert "after the gate" in rest.out
    assert rest.out.rstrip("\n").split("\n")[-1].startswith("status: succeeded")
    assert fleet.finish(run).code == 0


def test_tail_f_of_an_ended_agent_returns_at_once(fleet: Fleet) -> None:
    fleet.plan(task("a"))
    assert fleet.cli("run", "plan.yaml", "--no-live").code == 0
    done = fleet.cli("tail", "-f", "a", timeout=5)
    assert done.code == 0
    assert done.out.rstrip("\n").split("\n")[-1].startswith("status: succeeded")


def test_tail_f_stops_when_the_orchestrator_is_killed(fleet: Fleet) -> None:
    fleet.plan(gated("a"))
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running("a")
    follower = fleet.start("tail", "-f", "a", pipe=True)
    assert follower.stdout is not None
    assert follower.stdout.readline() == "# a\n"
    run.kill()
    run.wait()
    done = fleet.finish(follower, timeout=10)
    assert done.code == 0
    assert "no orchestrator is running; a will not write more" in done.err


def test_wait_any_returns_when_the_first_agent_ends(fleet: Fleet) -> None:
    fleet.plan(gated("a"), gated("b"))
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running("a", "b")
    waiter = fleet.start("wait", "a", "b", "--any", pipe=True)
    with pytest.raises(subprocess.TimeoutExpired):
        waiter.wait(timeout=0.3)
    release(fleet, "b")
    done = fleet.finish(waiter, timeout=10)
    assert done.code == 0
    assert done.out == "b: succeeded\n"
    assert fleet.journal().agents["a"]["state"] == "running"
    release(fleet, "a")
    assert fleet.finish(run).code == 0


def test_wait_for_all_exits_1_when_one_did_not_succeed(fleet: Fleet) -> None:
    fleet.plan(gated("a"), gated("b", then="fail: it broke"))
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running("a", "b")
    waiter = fleet.start("wait", "a", "b", pipe=True)
    release(fleet, "a", "b")
    done = fleet.finish(waiter, timeout=10)
    assert done.code == 1
    assert sorted(done.out.splitlines()) == ["a: succeeded", "b: failed"]
    assert fleet.finish(run).code == 1


def test_wait_timeout_exits_124(fleet: Fleet) -> None:
    fleet.plan(gated("a"))
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running("a")
    t0 = time.monotonic()
    done = fleet.cli("wait", "a", "--timeout", "0.3", timeout=20)
    assert done.code == 124
    assert time.monotonic() - t0 < 20  # a's gate never opens: only its own timeout ends it
    assert "timed out" in done.out
    release(fleet, "a")
    assert fleet.finish(run).code == 0
    assert fleet.call("wait", "a", "--timeout", "0.3").code == 0


def test_wait_on_a_task_follows_its_retries_to_where_it_settled(fleet: Fleet) -> None:
    fleet.plan(gated("a"))
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running("a")
    waiter = fleet.start("wait", "a", pipe=True)
    release(fleet, "a")
    assert fleet.finish(waiter, timeout=10).out == "a: succeeded\n"
    assert fleet.finish(run).code == 0


def test_wait_on_an_agent_whose_orchestrator_died_reports_it_lost(fleet: Fleet) -> None:
    fleet.plan(gated("a"))
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running("a")
    waiter = fleet.start("wait", "a", pipe=True)
    run.kill()
    run.wait()
    done = fleet.finish(waiter, timeout=10)
    assert done.code == 1
    assert done.out == "a: lost\n"


def test_two_runs_started_together_one_runs_the_other_exits_75_naming_it(fleet: Fleet) -> None:
    fleet.plan(gated("a"))
    first, second = (fleet.start("run", "plan.yaml", "--no-live") for _ in range(2))
    fleet.wait_running("a")
    poll(lambda: first.poll() is not None or second.poll() is not None, what="one to give up")
    loser, winner = (second, first) if first.poll() is None else (first, second)
    lost = fleet.finish(loser, timeout=10)
    assert lost.code == 75
    assert f"(pid {winner.pid})" in lost.err
    assert "Traceback" not in lost.text
    assert fleet.journal().run["pid"] == winner.pid
    release(fleet, "a")
    assert fleet.finish(winner).code == 0
    assert ends_with_status(fleet.responses / "a.md")
    assert (fleet.workspace / "go-a").exists()


def test_monitors_probing_the_lock_never_make_a_starting_run_think_it_is_taken(
    tmp_path: Path,
) -> None:
    rundir = RunDir(tmp_path / "agent-responses")
    rundir.ensure()
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            is_locked(rundir)  # what status, wait, watch and tail -f do all the time

    probers = [threading.Thread(target=probe) for _ in range(2)]
    for t in probers:
        t.start()
    try:
        for _ in range(100):
            lock = RunLock(rundir)
            lock.acquire()
            assert holder_pid(rundir) == os.getpid()
            lock.release()
    finally:
        stop.set()
        for t in probers:
            t.join()


def test_a_second_lock_names_the_holder(tmp_path: Path) -> None:
    rundir = RunDir(tmp_path / "agent-responses")
    first = RunLock(rundir)
    first.acquire()
    try:
        with pytest.raises(RunLockedError) as caught:
            RunLock(rundir).acquire()
        assert caught.value.pid == os.getpid()
        assert caught.value.exit_code == 75
    finally:
        first.release()
    RunLock(rundir).acquire()
