"""`run --resume`: the journal survives any crash; succeeded work never runs twice.

Scripted tasks append their id to ``ws/ran.txt`` when they act, so a test can count how often
each task really ran. The plan-comparison logic (`plan_resume`) is pure and tested by table.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clirun import Fleet, ends_with_status, kill_with_its_guard, poll, sleepers, task
from conftest import processes_with_marker, scripted

from orchestrator.errors import UsageError
from orchestrator.events import TERMINAL_STATES
from orchestrator.plan.model import Fail, Plan, Say
from orchestrator.records.journal import JournalState
from orchestrator.records.resume import fingerprint, plan_resume


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.close()


def acting(tid: str, *, deps: tuple[str, ...] = (), pause: float = 0.0) -> dict[str, Any]:
    """A task that records that it ran, then takes ``pause`` seconds."""
    steps: list[dict[str, Any]] = [{"run": f"echo {tid} >> ran.txt"}]
    if pause:
        steps.append({"run": f"sleep {pause}"})
    return task(tid, *steps, deps=deps)


def ran(fleet: Fleet) -> Counter[str]:
    path = fleet.workspace / "ran.txt"
    return Counter(path.read_text().split()) if path.exists() else Counter()


def terminal_records(fleet: Fleet) -> dict[str, int]:
    """How many times the journal recorded each agent in a final state."""
    text = (fleet.responses / ".run" / "journal.jsonl").read_text(encoding="utf-8")
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    return dict(
        Counter(
            r["id"] for r in records if r.get("k") == "agent" and r.get("state") in TERMINAL_STATES
        )
    )


def progress_files(fleet: Fleet) -> list[Path]:
    return [p for p in fleet.responses.glob("*.md") if p.name != "REPORT.md"]


def test_resume_after_sigkill_keeps_successes_and_marks_the_vanished_lost(fleet: Fleet) -> None:
    fleet.plan(
        acting("a"),
        acting("b", deps=("a",)),
        task("slow", {"run": "echo slow >> ran.txt; setsid sleep 30 & "
                             "while [ ! -e go ]; do sleep 0.02; done"}),
        sandbox="off",  # leftovers outlive a SIGKILL only unconfined (tests/sandbox: none)
    )  # fmt: skip
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running("slow")
    fleet.wait_state("b", "succeeded")
    run_id = fleet.run_id()
    poll(lambda: "slow" in sleepers(run_id), what="slow's escaped sleep")
    kill_with_its_guard(run)  # and with no guard to stop them (tests/test_signals.py)
    leftovers = poll(lambda: processes_with_marker(run_id), what="slow's leftovers")
    resumed = fleet.start("run", "plan.yaml", "--no-live", "--resume")
    fleet.wait_running("slow+2")
    alive = set(processes_with_marker(run_id))
    assert not alive & set(leftovers), "the old run's leftovers are stopped before it goes on"
    (fleet.workspace / "go").touch()
    again = fleet.finish(resumed)
    assert again.code == 0, again.text
    assert "resume: 2 succeeded task(s) kept: a, b" in again.err
    assert "resume: marked lost (their process was gone): slow" in again.err
    assert ran(fleet) == {"a": 1, "b": 1, "slow": 2}
    state = fleet.journal()
    assert state.run["run_id"] == run_id, "a resumed run keeps its id"
    assert state.agents["slow"]["state"] == "lost"
    assert state.agents["slow+2"]["state"] == "succeeded"
    assert state.tasks["slow"]["state"] == "succeeded"
    lost = (fleet.responses / "slow.md").read_text()
    assert lost.rstrip("\n").split("\n")[-1].startswith("status: lost")
    assert "- attempt: 2" in (fleet.responses / "slow+2.md").read_text()
    for path in progress_files(fleet):
        assert ends_with_status(path), path.name
    assert not processes_with_marker(run_id)


def test_resume_at_once_after_sigkill_is_not_stopped_by_the_old_guard(fleet: Fleet) -> None:
    gate = "echo slow >> ran.txt; setsid sleep 30 & while [ ! -e go ]; do sleep 0.02; done"
    fleet.plan(task("slow", {"run": gate}), sandbox="off")
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running("slow")
    run_id = fleet.run_id()
    poll(lambda: "slow" in sleepers(run_id), what="slow's escaped sleep")
    run.kill()  # its guard sweeps the run (same id as the resumed one) as this one starts
    run.wait()
    resumed = fleet.start("run", "plan.yaml", "--no-live", "--resume")
    fleet.wait_running("slow+2")
    poll(lambda: ran(fleet).get("slow") == 2, what="the second attempt's start")
    (fleet.workspace / "go").touch()
    again = fleet.finish(resumed)
    assert again.code == 0, again.text
    assert fleet.journal().agents["slow+2"]["state"] == "succeeded"
    assert not processes_with_marker(run_id)


def test_resume_after_sigint_starts_new_attempts_of_the_interrupted(fleet: Fleet) -> None:
    fleet.plan(
        acting("a"),
        task("gate", {"run": "echo gate >> ran.txt; while [ ! -e go ]; do sleep 0.02; done"}),
        acting("after", deps=("gate",)),
    )
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running("gate")
    fleet.wait_state("a", "succeeded")
    poll(lambda: ran(fleet)["gate"], what="gate to have acted")  # running is not acting yet
    run.send_signal(signal.SIGINT)
    assert fleet.finish(run).code == 130
    (fleet.workspace / "go").touch()
    again = fleet.cli("run", "plan.yaml", "--no-live", "--resume")
    assert again.code == 0, again.text
    assert ran(fleet) == {"a": 1, "gate": 2, "after": 1}
    state = fleet.journal()
    assert state.agents["gate"]["state"] == "cancelled"
    assert state.agents["gate+2"]["state"] == "succeeded"
    assert state.run["state"] == "finished"


def test_after_a_resume_a_task_id_follows_the_new_attempt_and_times_agree(fleet: Fleet) -> None:
    gate = "echo alpha is up; while [ ! -e go ]; do sleep 0.02; done"
    fleet.plan(task("alpha", {"run": gate}), acting("beta"))
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running("alpha")
    run.send_signal(signal.SIGINT)
    assert fleet.finish(run).code == 130
    assert fleet.journal().tasks["alpha"]["state"] == "cancelled"
    resumed = fleet.start("run", "plan.yaml", "--no-live", "--resume")
    fleet.wait_running("alpha+2")
    waiter = fleet.start("wait", "alpha", pipe=True)
    live = json.loads(fleet.call("status", "--json").out)["run"]
    assert (live["state"], live["ended"]) == ("running", None), live
    poll(lambda: "alpha is up" in (fleet.responses / "alpha+2.md").read_text(), what="alpha+2")
    peeked = fleet.call("peek", "alpha", "-n", "1")
    assert peeked.out.rstrip("\n").endswith("| alpha is up"), peeked.out
    assert "latest attempt is alpha+2" in peeked.err
    assert fleet.call("tail", "alpha").out.startswith("# alpha+2\n")
    assert waiter.poll() is None, "wait follows alpha+2, not the earlier attempt's end"
    (fleet.workspace / "go").touch()
    assert fleet.finish(waiter, timeout=10).out == "alpha: succeeded\n"
    assert fleet.finish(resumed).code == 0
    shown = json.loads(fleet.call("status", "--json").out)
    assert shown["run"]["state"] == "finished"
    assert shown["run"]["ended"] >= shown["run"]["started"]
    for agent in shown["agents"]:
        if agent["ended"] is not None:
            assert agent["ended"] >= agent["started"], agent


def test_resume_of_a_finished_run_runs_nothing_again(fleet: Fleet) -> None:
    fleet.plan(acting("a"), acting("b", deps=("a",)))
    assert fleet.cli("run", "plan.yaml", "--no-live").code == 0
    again = fleet.cli("run", "plan.yaml", "--no-live", "--resume")
    assert again.code == 0
    assert ran(fleet) == {"a": 1, "b": 1}


def test_a_task_whose_dependencies_all_succeeded_before_starts_once_on_resume(
    fleet: Fleet,
) -> None:
    fleet.plan(
        acting("a"),
        acting("b"),
        task("c", {"run": "echo c >> ran.txt; test -e ok"}, deps=("a", "b")),
    )
    assert fleet.cli("run", "plan.yaml", "--no-live").code == 1
    (fleet.workspace / "ok").touch()
    again = fleet.cli("run", "plan.yaml", "--no-live", "--resume")
    assert again.code == 0, again.text
    assert "Traceback" not in again.text
    assert ran(fleet) == {"a": 1, "b": 1, "c": 2}
    assert sorted(fleet.journal().agents) == ["a", "b", "c", "c+2"]


def test_a_fresh_run_after_a_crash_still_stops_the_leftovers_first(fleet: Fleet) -> None:
    fleet.plan(task("a", {"run": "setsid sleep 30 & sleep 30"}))
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running("a")
    old_id = fleet.run_id()
    poll(lambda: len(processes_with_marker(old_id)) >= 2, what="a's processes")
    run.kill()
    run.wait()
    fleet.plan(acting("b"))
    assert fleet.cli("run", "plan.yaml", "--no-live").code == 0
    assert not processes_with_marker(old_id)
    assert not (fleet.responses / "a.md").exists(), "a fresh run starts with its own files"
    kept = fleet.responses / ".runs" / old_id
    assert (kept / "a.md").is_file(), "the old run's files are kept under its run id"
    assert (kept / ".run" / "journal.jsonl").is_file()


def test_a_changed_plan_is_compared_with_the_journal(fleet: Fleet) -> None:
    fleet.plan(acting("a"), acting("b"), acting("c"), task("d", {"fail": "not yet"}))
    assert fleet.cli("run", "plan.yaml", "--no-live").code == 1
    assert ran(fleet) == {"a": 1, "b": 1, "c": 1}
    changed_b = task("b", {"run": "echo b >> ran.txt"}, {"say": "b, second version"})
    fleet.plan(acting("a"), changed_b, acting("d"), acting("e"))
    again = fleet.cli("run", "plan.yaml", "--no-live", "--resume")
    assert again.code == 0, again.text
    assert "resume: 1 succeeded task(s) kept: a" in again.err
    assert "resume: changed in the plan, run again: b, d" in again.err
    assert "resume: no longer in the plan: c" in again.err
    assert "resume: new in the plan: e" in again.err
    assert ran(fleet) == {"a": 1, "b": 2, "c": 1, "d": 1, "e": 1}


# --- SIGKILL at random points, then resume --------------------------------------------------


def chain_plan(rng: random.Random) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = []
    for i in range(rng.randint(3, 6)):
        deps = tuple(t["id"] for t in tasks if rng.random() < 0.4)
        tasks.append(acting(f"t{i}", deps=deps, pause=round(rng.uniform(0, 0.15), 2)))
    return tasks


def kill_and_resume(fleet: Fleet, seed: int) -> None:
    rng = random.Random(seed)
    tasks = chain_plan(rng)
    fleet.plan(*tasks, limits={"max_concurrency": rng.randint(1, 3)})
    ids = [t["id"] for t in tasks]
    for _round in range(rng.randint(1, 2)):
        run = fleet.start("run", "plan.yaml", "--no-live", "--resume")
        fleet.run_id()
        time.sleep(rng.uniform(0, 0.4))  # noqa: TID251 - a random moment is the point here
        run.kill()
        run.wait()
        state = fleet.journal()  # it always loads (torn lines are skipped)
        kept = {t for t, rec in state.tasks.items() if rec.get("state") == "succeeded"}
        before = ran(fleet)
        final = fleet.cli("run", "plan.yaml", "--no-live", "--resume", timeout=30)
        assert final.code in (0, -signal.SIGKILL), (seed, final.text)
        after = ran(fleet)
        for tid in kept:
            assert after[tid] == before[tid], f"seed {seed}: succeeded {tid} ran again"
        if final.code == 0:
            break
    state = fleet.journal()
    assert state.run["state"] == "finished", (seed, final.code, final.text)
    for tid in ids:
        assert state.tasks[tid]["state"] == "succeeded", (seed, tid)
        assert ran(fleet)[tid] >= 1
    for aid, rec in state.agents.items():
        assert rec["state"] in TERMINAL_STATES, (seed, aid)
    assert terminal_records(fleet) == dict.fromkeys(state.agents, 1), seed
    for path in progress_files(fleet):
        assert ends_with_status(path), (seed, path.name)
        lines = path.read_text().splitlines()
        assert sum(ln.startswith("status: ") for ln in lines) == 1, (seed, path.name)
    for run_id in fleet.run_ids:
        assert not processes_with_marker(run_id)


@pytest.mark.parametrize("seed", range(5))
def test_sigkill_at_a_random_point_then_resume(fleet: Fleet, seed: int) -> None:
    kill_and_resume(fleet, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 160))
def test_sigkill_then_resume_soak(fleet: Fleet, seed: int) -> None:
    kill_and_resume(fleet, seed)


# --- plan_resume, pure ---------------------------------------------------------------------


def journal_of(
    plan: Plan, tasks: dict[str, str], agents: dict[str, dict[str, Any]]
) -> JournalState:
    state = JournalState()
    state.run = {"run_id": "r", "fingerprints": {t.id: fingerprint(t) for t in plan.tasks}}
    state.tasks = {tid: {"id": tid, "state": s} for tid, s in tasks.items()}
    state.agents = agents
    return state


def plan_of(*tasks: Any) -> Plan:
    return Plan("p", tuple(tasks), workspace=Path("."))


def test_plan_resume_keeps_only_unchanged_successes() -> None:
    old = plan_of(scripted("a"), scripted("b"), scripted("c"))
    journal = journal_of(old, {"a": "succeeded", "b": "succeeded", "c": "failed"}, {})
    new = plan_of(scripted("a"), scripted("b", Say("changed")), scripted("c"))
    decided = plan_resume(journal, new)
    assert decided.done == ("a",)
    assert decided.changed == ("b",)


def test_plan_resume_numbers_new_attempts_after_the_old_ones() -> None:
    plan = plan_of(scripted("a"), scripted("b"))
    agents = {
        "a": {"task": "a", "attempt": 1, "state": "blocked", "role": "task"},
        "a+2": {"task": "a", "attempt": 2, "state": "cancelled", "role": "task"},
        "a+fix1": {"task": "a", "attempt": 1, "state": "succeeded", "role": "fixer"},
        "b": {"task": "b", "attempt": 1, "state": "running", "role": "task"},
    }
    decided = plan_resume(journal_of(plan, {}, agents), plan)
    assert decided.attempts == {"a": 2, "b": 1}
    assert decided.lost == ("b",)
    assert decided.done == ()


def test_a_journal_with_the_earlier_agent_names_resumes() -> None:
    plan = plan_of(scripted("a"), scripted("b"))
    agents = {  # recorded before derived ids took the '+' separator
        "a": {"task": "a", "attempt": 1, "state": "blocked", "role": "task"},
        "a.2": {"task": "a", "attempt": 2, "state": "failed", "role": "task"},
        "fix-a-1": {"task": "a", "attempt": 1, "state": "succeeded", "role": "fixer"},
        "build-1": {"task": "build", "attempt": 1, "state": "failed", "role": "build"},
    }
    decided = plan_resume(journal_of(plan, {}, agents), plan)
    assert decided.attempts == {"a": 2}  # its next attempt is a+3: no name is used twice


def test_a_task_named_like_an_earlier_runs_derived_agent_refuses_to_resume() -> None:
    plan = plan_of(scripted("a"), scripted("build-1"))
    agents = {
        "a": {"task": "a", "attempt": 1, "state": "succeeded", "role": "task"},
        "build-1": {"task": "build", "attempt": 1, "state": "failed", "role": "build"},
    }
    with pytest.raises(UsageError, match=r"cannot resume.*build-1.*without --resume"):
        plan_resume(journal_of(plan, {}, agents), plan)


def test_plan_resume_reports_removed_and_added_tasks() -> None:
    old = plan_of(scripted("a"), scripted("gone"))
    new = plan_of(scripted("a"), scripted("fresh", Fail("x")))
    decided = plan_resume(journal_of(old, {"a": "succeeded"}, {}), new)
    assert decided.removed == ("gone",)
    assert decided.added == ("fresh",)
    assert decided.done == ("a",)
    assert decided.notes() == [
        "resume: 1 succeeded task(s) kept: a",
        "resume: no longer in the plan: gone",
        "resume: new in the plan: fresh",
    ]


def test_plan_resume_of_an_empty_journal_runs_everything() -> None:
    plan = plan_of(scripted("a"))
    decided = plan_resume(JournalState(), plan)
    assert decided.done == ()
    assert decided.notes() == []


def test_a_fingerprint_ignores_where_the_task_sits_but_not_what_it_does() -> None:
    assert fingerprint(scripted("a")) == fingerprint(scripted("a"))
    assert fingerprint(scripted("a")) != fingerprint(scripted("a", Say("other")))
    assert fingerprint(scripted("a", deps=("b",))) != fingerprint(scripted("a"))


# --- a torn journal, and cleaners racing a resume ---------------------------------------------


def killed_mid_run(fleet: Fleet, *tasks: dict[str, Any], **top: Any) -> str:
    """Start a run of ``tasks`` (the first one gated by ``ws/go``), SIGKILL it once the first
    is running; its run id."""
    fleet.plan(*tasks, **top)
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running(str(tasks[0]["id"]))
    run_id = fleet.run_id()
    run.kill()
    run.wait()
    return run_id


GATED = "while [ ! -e go ]; do sleep 0.02; done"


def test_a_torn_journal_tail_reads_as_absent_and_resume_starts_on_a_new_line(
    fleet: Fleet,
) -> None:
    killed_mid_run(fleet, task("a", {"run": GATED}), acting("b", deps=("a",)))
    journal = fleet.responses / ".run" / "journal.jsonl"
    data = journal.read_bytes()
    journal.write_bytes(data + data.splitlines(keepends=True)[-1][:25])  # a power cut mid-write
    (fleet.workspace / "go").touch()
    done = fleet.cli("run", "plan.yaml", "--no-live", "--resume")
    assert done.code == 0, done.text
    state = fleet.journal()
    assert state.torn == 1
    assert state.run["state"] == "finished"
    assert {a: r["state"] for a, r in state.agents.items()} == {
        "a": "lost", "a+2": "succeeded", "b": "succeeded",
    }  # fmt: skip
    lines = journal.read_bytes().split(b"\n")
    assert sum(1 for line in lines if line and not line.startswith(b"{")) == 0
    assert sum(1 for line in lines if line and not line.endswith(b"}")) == 1  # the torn one


STUBBORN_ESCAPEE = "setsid sh -c \"trap '' TERM; while :; do sleep 0.05; done\" & " + GATED


def escapee_loops(run_id: str) -> list[int]:
    """The run's processes running the escapee's loop (its ``trap`` in their command line)."""
    found = []
    for pid in processes_with_marker(run_id):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as fh:
            if b"trap '' TERM" in fh.read():
                found.append(pid)
    return found


def test_a_resume_waits_for_a_cleaner_holding_the_lock_instead_of_exiting_75(
    fleet: Fleet,
) -> None:
    from orchestrator.records.rundir import RunDir, held_if_free

    killed_mid_run(fleet, task("a", {"run": GATED}))
    (fleet.workspace / "go").touch()
    with held_if_free(RunDir(fleet.responses)) as held:  # what `status` does over a dead run
        assert held
        resume = fleet.start("run", "plan.yaml", "--no-live", "--resume")
        time.sleep(1.0)  # noqa: TID251 - longer than a starting run's probe of the lock
        assert resume.poll() is None, "the resume gave up while a cleaner held the lock"
    done = fleet.finish(resume)
    assert done.code == 0, done.text


def status_and_resume_race(fleet: Fleet) -> None:
    # Unconfined: only there do escapees outlive the orchestrator (a sandbox dies with it).
    # Killed only once the escapee's loop is up (found by its command line: a count of
    # processes is racy, its `sleep`s live 20-50 ms and a loaded machine's scan is slower).
    fleet.plan(task("a", {"run": STUBBORN_ESCAPEE}), sandbox="off")
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running("a")
    run_id = fleet.run_id()
    poll(lambda: escapee_loops(run_id), what="the escapee's loop")
    run.kill()
    run.wait()
    (fleet.workspace / "go").touch()
    status = fleet.start("status", pipe=True)
    resume = fleet.start("run", "plan.yaml", "--no-live", "--resume", pipe=True)
    shown, resumed = fleet.finish(status), fleet.finish(resume)
    assert shown.code == 0, shown.text
    assert resumed.code == 0, resumed.text  # never 75 naming the dead orchestrator
    assert "in use by a running orchestrator" not in resumed.err
    assert not processes_with_marker(run_id)
    state = fleet.journal()
    assert state.run["state"] == "finished"
    assert state.agents["a+2"]["state"] == "succeeded"


def test_status_and_resume_racing_over_a_dead_run_both_succeed(fleet: Fleet) -> None:
    status_and_resume_race(fleet)


@pytest.mark.slow
@pytest.mark.parametrize("attempt", range(10))
def test_status_and_resume_racing_over_a_dead_run_soak(attempt: int, tmp_path: Path) -> None:
    f = Fleet(tmp_path)
    try:
        status_and_resume_race(f)
    finally:
        f.close()
