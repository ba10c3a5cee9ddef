"""Every way a run stops, against agents whose descendants resist: no hang, nothing left.

The agents here ignore SIGTERM, leave descendants that escape their process group (``setsid``)
or their parent (a double fork), hold the pipes open from outside and inside the group, and
exit before their children. Each trial stops a real `orchestrator run` one way, at a random
moment (seeded): SIGINT, SIGTERM, two SIGINTs, ``cancel --all``, ``cancel`` of one agent, a
task timeout, a stall, or the run simply ending. A trial *hangs* when the stop takes longer
than the grace period plus `MARGIN`; it *leaves* something when a process carrying the run's
id is still alive `LEFTOVER_WAIT` seconds after the orchestrator exited.

The default suite runs a few trials; the slow soak runs `SOAK_TRIALS` (at least 200) and
prints the figure (``-s`` shows it).
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from clirun import Fleet, ends_with_status, task
from conftest import processes_with_marker

from orchestrator.events import TERMINAL_STATES

MARGIN = 5.0
"""Seconds a stop may take beyond the grace period before it counts as a hang. Measured stops
take a fraction of a second beyond the grace; this is generous so that a loaded 2-core machine
(the interpreter's exit, the report, the final /proc sweep) never counts as a hang."""
LEFTOVER_WAIT = 3.0
"""SIGKILL takes effect asynchronously: a process still alive this long after the orchestrator
exited is a leftover."""
SOAK_TRIALS = int(os.environ.get("STOP_SOAK_TRIALS", "200"))
SOAK_SEEDS = [int(s) for s in os.environ.get("STOP_SOAK_SEEDS", "").split(",") if s.strip()]
"""Chosen seeds (``STOP_SOAK_SEEDS=1041,1059``) in place of the soak's range, to chase a
failure seen in CI; each seed gives the same trial (its kind, plan and moments)."""

# Shapes of an agent's shell command; "up" is printed once everything is in place.
RESIST = {
    "stubborn": "trap '' TERM; echo up; while :; do sleep 0.05; done",
    "setsid": "setsid sh -c \"trap '' TERM; sleep 30\" & echo up; sleep 30",
    "double-fork": "(trap '' TERM; sleep 30 &); echo up; trap '' TERM; sleep 30",
    "orphaner": "sleep 30 & (setsid sleep 30 &); (sleep 30 &); echo up; exit 0",
    "quiet-holder": "(exec 2>&-; setsid sleep 30 &) ; echo up; sleep 0.3",
}
"""Shapes that resist stopping: ignore TERM, escape the group or the parent, hold the pipes,
exit before their children (``orphaner`` ends at once and leaves its children behind)."""
FOREVER = ("stubborn", "setsid", "double-fork")
"""The shapes that never end by themselves: the first task of a trial stopped from outside."""
ENDING = {
    "orphaner": RESIST["orphaner"],
    "quick": "sleep 0.1",
    "flood": "for i in $(seq 2000); do echo line $i; done",
    "holder-exits": "(sleep 30 &); setsid sleep 30 & echo up; sleep 0.2",
}
"""Shapes that end by themselves, most leaving descendants behind (for the run's own end)."""
KINDS = ("SIGINT", "SIGTERM", "SIGINT-twice", "cancel-all", "cancel-one", "timeout", "stall",
         "end")  # fmt: skip
SELF_ENDING = ("timeout", "stall", "end")


@dataclass
class Trial:
    seed: int
    kind: str
    grace: float
    took: float = 0.0
    """Seconds from the stop (a signal, a request) to its end; for the kinds that stop by
    themselves (`SELF_ENDING`), the whole run's length."""
    hang: bool = False
    left: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def shaped(tid: str, shell: str, **kw: Any) -> dict[str, Any]:
    return task(tid, {"say": f"{tid} starting"}, {"run": shell}, **kw)


def plan_for(rng: random.Random, kind: str) -> tuple[list[dict[str, Any]], float, float]:
    """Tasks for one trial, the grace period, and the per-task timeout (0: none)."""
    grace = rng.choice([0.2, 0.5, 1.0])
    shapes = ENDING if kind == "end" else RESIST
    timeout = rng.uniform(0.4, 1.2) if kind == "timeout" else 0.0
    tasks: list[dict[str, Any]] = []
    for i in range(rng.randint(2, 5)):
        name = rng.choice(sorted(shapes))
        if i == 0 and kind not in SELF_ENDING:
            name = rng.choice(sorted(FOREVER))  # so the run is still going when it is stopped
        extra: dict[str, Any] = {}
        if timeout:
            extra["timeout"] = f"{timeout:.2f}"
        if kind == "stall":
            extra["stall_timeout"] = f"{rng.uniform(0.3, 0.8):.2f}"
        deps = (tasks[-1]["id"],) if tasks and rng.random() < 0.25 else ()
        tasks.append(shaped(f"t{i}-{name}", shapes[name], deps=deps, **extra))
    return tasks, grace, timeout


def trial(fleet: Fleet, seed: int, kind: str) -> Trial:
    rng = random.Random(seed)
    tasks, grace, timeout = plan_for(rng, kind)
    result = Trial(seed, kind, grace)
    fleet.plan(*tasks, limits={"grace": grace})
    run = fleet.start("run", "plan.yaml", "--no-live")
    run_id = fleet.run_id()
    bound = grace + MARGIN
    expected = {0, 1}
    if kind in ("SIGINT", "SIGTERM", "SIGINT-twice", "cancel-all"):
        time.sleep(rng.uniform(0, 0.8))  # noqa: TID251 - a random moment is the point here
        started = time.monotonic()
        if kind.startswith("SIG"):
            signum = signal.SIGTERM if kind == "SIGTERM" else signal.SIGINT
            expected = {128 + signum, -signum}  # -signum: it came before the handlers were up
            if run.poll() is None:
                run.send_signal(signum)
            else:
                result.problems.append("the run ended before it was stopped")
            if kind == "SIGINT-twice":
                time.sleep(rng.uniform(0, grace))  # noqa: TID251 - a moment in the grace
                if run.poll() is None:
                    run.send_signal(signum)
        else:
            fleet.call("cancel", "--all")
    elif kind == "cancel-one":
        victim = tasks[0]["id"]
        fleet.wait_running(victim)
        time.sleep(rng.uniform(0, 0.3))  # noqa: TID251 - a random moment is the point here
        started = time.monotonic()
        fleet.call("cancel", victim)
        try:
            fleet.wait_state(victim, *TERMINAL_STATES, timeout=bound)
        except AssertionError:
            result.hang = True
            result.problems.append(f"cancel {victim} did not end it within {bound:g}s")
        result.took = time.monotonic() - started
        fleet.call("cancel", "--all")
    else:
        # The run stops by itself: a deadline, a stall, or every task ending. Bounded from
        # the start: whatever the tasks do, it must end by the last deadline plus the grace.
        started = time.monotonic()
        if kind == "end":
            bound += 3.0  # the tasks' own work (a 2,000-line flood, short sleeps)
        else:  # a chain of deadlines or stalls, each with its grace
            bound += len(tasks) * ((timeout or 0.8) + grace)
    try:
        done = fleet.finish(run, timeout=bound + 10)
    except AssertionError:
        result.hang = True
        result.problems.append("the orchestrator never exited")
        return result
    if kind != "cancel-one":
        result.took = time.monotonic() - started
        if result.took > bound:
            result.hang = True
            result.problems.append(f"took {result.took:.2f}s, over {bound:g}s")
    if done.code not in expected:
        result.problems.append(f"exit {done.code}: {done.err[-300:]}")
    if "Traceback" in done.text:
        start = done.text.index("Traceback")
        result.problems.append(f"a traceback:\n{done.text[start:][-3000:]}")
    if done.code >= 0:
        state = fleet.journal()
        if state.run.get("state") not in ("finished", "interrupted"):
            result.problems.append(f"run state {state.run.get('state')}")
        for path in fleet.responses.glob("*.md"):
            if path.name != "REPORT.md" and not ends_with_status(path):
                result.problems.append(f"{path.name} has no status line")
    deadline = time.monotonic() + LEFTOVER_WAIT
    while (left := processes_with_marker(run_id)) and time.monotonic() < deadline:
        time.sleep(0.02)  # noqa: TID251 - waiting for SIGKILLed processes to vanish
    result.left = left
    return result


def run_trials(tmp_path: Path, seeds: Sequence[int]) -> list[Trial]:
    trials = []
    for n, seed in enumerate(seeds):
        kind = KINDS[seed % len(KINDS)]
        base = tmp_path / f"trial-{n}-{seed}"  # a seed may repeat
        base.mkdir()
        fleet = Fleet(base)
        try:
            trials.append(trial(fleet, seed, kind))
        finally:
            fleet.close()
    return trials


def figure(trials: list[Trial]) -> str:
    hangs = sum(t.hang for t in trials)
    leftovers = sum(len(t.left) for t in trials)
    lines = [
        f"stop soak: {len(trials)} trials, {hangs} hangs, {leftovers} leftover processes "
        f"(in {sum(bool(t.left) for t in trials)} trials)"
    ]
    over = sorted(t.took - t.grace for t in trials if t.kind not in SELF_ENDING)
    if over:
        p99 = over[min(len(over) - 1, int(len(over) * 0.99))]
        lines.append(
            f"  stopped from outside ({len(over)} trials): beyond the grace median "
            f"{statistics.median(over):.2f}s, p99 {p99:.2f}s, max {over[-1]:.2f}s"
        )
    for kind in KINDS:
        mine = [t for t in trials if t.kind == kind]
        if not mine:
            continue
        if kind in SELF_ENDING:
            what = f"longest run {max(t.took for t in mine):.2f}s"
        else:
            what = f"worst {max(t.took - t.grace for t in mine):.2f}s beyond the grace"
        lines.append(f"  {kind:>12}: {len(mine)} trials, {what}")
    for t in trials:
        if t.hang or t.left or t.problems:
            lines.append(f"  seed {t.seed} ({t.kind}): left {t.left}; {'; '.join(t.problems)}")
    return "\n".join(lines)


def check(trials: list[Trial]) -> None:
    text = figure(trials)
    print("\n" + text)
    assert not any(t.hang or t.left or t.problems for t in trials), text


@pytest.mark.parametrize("kind", KINDS)
def test_every_stop_ends_the_run_in_time_and_leaves_nothing(tmp_path: Path, kind: str) -> None:
    seed = KINDS.index(kind)  # one seed per kind: run_trials picks the kind from the seed
    check(run_trials(tmp_path, range(seed, seed + 1)))


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_stop_soak(tmp_path: Path) -> None:
    check(run_trials(tmp_path, SOAK_SEEDS or range(1000, 1000 + SOAK_TRIALS)))
