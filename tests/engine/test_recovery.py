"""The blocker/fixer policy (P10) as a decision table, plus signatures, prompts and invariants."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.engine.blockers import Blocker, fixer_prompt, normalise, signature_of
from orchestrator.engine.recovery import (
    Action,
    AttemptEnded,
    BuildFailed,
    Capacity,
    EndTask,
    Escalate,
    Event,
    FixerEnded,
    Rebuild,
    RecoveryState,
    RetryTask,
    SpawnFixer,
    Wait,
    decide,
    is_fixable,
)

ROOMY = Capacity(agents_left=10)
SCHEMA = "Need the schema for the users table (app/models.py line 12)"
SCHEMA_AGAIN = "need the schema for the users table  (app/models.py line 14)"
CONFIG = "missing setting DATABASE_URL"


def blocked(task: str, reason: str = SCHEMA, attempt: int = 1, depth: int = 0) -> AttemptEnded:
    return AttemptEnded(task, attempt, "blocked", reason, depth=depth)


def ended(task: str, state: str, attempt: int = 1, kind: str = "") -> AttemptEnded:
    return AttemptEnded(task, attempt, state, "it ended", kind=kind)


def fixer(fixer_id: str, outcome: str = "succeeded") -> FixerEnded:
    return FixerEnded(fixer_id, outcome, "did a thing")  # type: ignore[arg-type]


def build(n: int, *tests: str, exit_code: int = 1, tail: str = "E   assert 1 == 2") -> BuildFailed:
    return BuildFailed(n, exit_code, tail, tests)


def describe(action: Action) -> str:
    """A compact rendering that keeps the table readable."""
    match action:
        case SpawnFixer():
            return f"fix {action.fixer_id} for {','.join(action.tasks) or 'build'}"
        case RetryTask():
            return f"retry {action.agent_id}"
        case Rebuild():
            return f"rebuild {action.cycle}"
        case Escalate():
            return f"escalate {action.task_id or 'build'}"
        case EndTask():
            return f"end {action.task_id or 'build'} {action.state}"
        case Wait():
            return "wait"


def play(
    events: Sequence[Event], capacity: Capacity = ROOMY
) -> tuple[RecoveryState, list[tuple[Action, ...]]]:
    state, steps = RecoveryState(), []
    for event in events:
        state, actions = decide(state, event, capacity)
        steps.append(actions)
    return state, steps


TABLE: list[tuple[str, list[Event], Capacity, list[str]]] = [
    # agent blockers
    ("first blocker gets a fixer", [blocked("a")], ROOMY, ["fix a+fix1 for a"]),
    ("same blocker from another task shares the running fixer",
     [blocked("a"), blocked("b", SCHEMA_AGAIN)], ROOMY, ["wait"]),
    ("a shared fixer's success retries every task it served",
     [blocked("a"), blocked("b", SCHEMA_AGAIN), fixer("a+fix1")], ROOMY,
     ["retry a+2", "retry b+2"]),
    ("fixer success retries the task as attempt n+1",
     [blocked("a"), fixer("a+fix1")], ROOMY, ["retry a+2"]),
    ("a retry that succeeds ends the task",
     [blocked("a"), fixer("a+fix1"), ended("a", "succeeded", attempt=2)], ROOMY,
     ["end a succeeded"]),
    ("fixer fails: escalate", [blocked("a"), fixer("a+fix1", "failed")], ROOMY, ["escalate a"]),
    ("fixer blocks: escalate, no fixer for the fixer",
     [blocked("a"), fixer("a+fix1", "blocked")], ROOMY, ["escalate a"]),
    ("fixer times out: escalate", [blocked("a"), fixer("a+fix1", "timed_out")], ROOMY,
     ["escalate a"]),
    ("a failed shared fixer escalates every task it served",
     [blocked("a"), blocked("b"), fixer("a+fix1", "failed")], ROOMY,
     ["escalate a", "escalate b"]),
    ("retry blocked with the same signature: escalate",
     [blocked("a"), fixer("a+fix1"), blocked("a", SCHEMA_AGAIN, attempt=2)], ROOMY,
     ["escalate a"]),
    ("retry blocked with a different signature: a new fixer",
     [blocked("a"), fixer("a+fix1"), blocked("a", CONFIG, attempt=2)], ROOMY,
     ["fix a+fix2 for a"]),
    ("a blocker already fixed for another task retries without a second fixer",
     [blocked("a"), fixer("a+fix1"), blocked("b", SCHEMA_AGAIN)], ROOMY, ["retry b+2"]),
    ("a blocker whose fixer failed escalates later reporters too",
     [blocked("a"), fixer("a+fix1", "failed"), blocked("b")], ROOMY, ["escalate b"]),
    ("a task's own fixers count from 1 even after sharing another's",
     [blocked("a"), blocked("b"), fixer("a+fix1"), blocked("b", CONFIG, attempt=2)], ROOMY,
     ["fix b+fix1 for b"]),
    # limits
    ("no agents left: escalate", [blocked("a")], Capacity(agents_left=0), ["escalate a"]),
    ("governor refuses (budget spent): escalate", [blocked("a")],
     Capacity(agents_left=5, refusal="budget of $10.00 spent"), ["escalate a"]),
    ("fixer past max_depth: escalate", [blocked("a", depth=2)], Capacity(10, max_depth=2),
     ["escalate a"]),
    ("fixer at max_depth: allowed", [blocked("a", depth=1)], Capacity(10, max_depth=2),
     ["fix a+fix1 for a"]),
    ("one agent left is enough for the retry",
     [blocked("a"), fixer("a+fix1")], Capacity(agents_left=1), ["retry a+2"]),
    ("retries beyond agents_left escalate",
     [blocked("a"), blocked("b"), fixer("a+fix1")], Capacity(agents_left=1),
     ["retry a+2", "escalate b"]),
    # builds
    ("failed build gets a fixer", [build(1, "t::a")], ROOMY, ["fix +build+fix1 for build"]),
    ("build fixer success re-runs the build", [build(1, "t::a"), fixer("+build+fix1")], ROOMY,
     ["rebuild 1"]),
    ("build fails the same way after its fix: escalate",
     [build(1, "t::a"), fixer("+build+fix1"), build(2, "t::a")], ROOMY, ["escalate build"]),
    ("build fails differently after a fix: a second cycle",
     [build(1, "t::a"), fixer("+build+fix1"), build(2, "t::b")], ROOMY,
     ["fix +build+fix2 for build"]),
    ("build still failing after max_fix_cycles: escalate",
     [build(1, "t::a"), fixer("+build+fix1"), build(2, "t::b"), fixer("+build+fix2"),
      build(3, "t::c")], ROOMY, ["escalate build"]),
    ("max_fix_cycles=0 escalates the first failure", [build(1, "t::a")],
     Capacity(10, max_fix_cycles=0), ["escalate build"]),
    ("build fixer fails: escalate", [build(1), fixer("+build+fix1", "failed")], ROOMY,
     ["escalate build"]),
    ("build command not found (127) is never fixed", [build(1, exit_code=127)], ROOMY,
     ["end build failed"]),
    ("build command not executable (126) is never fixed", [build(1, exit_code=126)], ROOMY,
     ["end build failed"]),
    # never fixed
    ("config failure: never a fixer", [ended("a", "failed", kind="config")], ROOMY,
     ["end a failed"]),
    ("an agent's own failure is not a blocker", [ended("a", "failed")], ROOMY, ["end a failed"]),
    ("cancelled attempt: never a fixer", [ended("a", "cancelled")], ROOMY, ["end a cancelled"]),
    ("budget exhaustion: never a fixer", [ended("a", "budget_exceeded", kind="budget")], ROOMY,
     ["end a budget_exceeded"]),
    ("timeout without fix_timeouts: not fixed", [ended("a", "timed_out")], ROOMY,
     ["end a timed_out"]),
    ("timeout with fix_timeouts: a fixer", [ended("a", "timed_out")],
     Capacity(10, fix_timeouts=True), ["fix a+fix1 for a"]),
    ("stalls of different tasks are not shared",
     [AttemptEnded("a", 1, "timed_out", "no output for 300s", stalled=True),
      AttemptEnded("b", 1, "timed_out", "no output for 300s", stalled=True)],
     Capacity(10, fix_timeouts=True), ["fix b+fix1 for b"]),
    ("cancelled fixer is not a fix: the task ends cancelled",
     [blocked("a"), fixer("a+fix1", "cancelled")], ROOMY, ["end a cancelled"]),
    ("a blocker whose fixer was cancelled gets no second fixer",
     [blocked("a"), fixer("a+fix1", "cancelled"), blocked("b")], ROOMY, ["escalate b"]),
    # stale and unknown input
    ("unknown fixer id: wait", [fixer("nobody+fix1")], ROOMY, ["wait"]),
    ("a fixer that ends twice: wait", [blocked("a"), fixer("a+fix1"), fixer("a+fix1")], ROOMY,
     ["wait"]),
    ("duplicate report while waiting on a fixer: wait", [blocked("a"), blocked("a")], ROOMY,
     ["wait"]),
    ("report from an attempt that is not the current one: wait",
     [blocked("a"), fixer("a+fix1"), blocked("a", CONFIG, attempt=3)], ROOMY, ["wait"]),
    ("report for a task that already ended: wait",
     [blocked("a"), fixer("a+fix1", "failed"), blocked("a", CONFIG, attempt=2)], ROOMY,
     ["wait"]),
]  # fmt: skip


@pytest.mark.parametrize(("events", "capacity", "expected"), [r[1:] for r in TABLE],
                         ids=[r[0] for r in TABLE])  # fmt: skip
def test_decision_table(events: list[Event], capacity: Capacity, expected: list[str]) -> None:
    _, steps = play(events, capacity)
    assert [describe(a) for a in steps[-1]] == expected


def test_no_agent_for_a_retry_escalates_after_a_successful_fix() -> None:
    state, _ = play([blocked("a")])
    _, actions = decide(state, fixer("a+fix1"), Capacity(agents_left=0, max_agents=7))
    (esc,) = actions
    assert isinstance(esc, Escalate)
    assert "a+fix1 succeeded" in esc.reason
    assert "max_agents=7" in esc.reason


def test_escalation_says_what_was_tried_and_what_to_do() -> None:
    _, steps = play([blocked("a"), fixer("a+fix1"), blocked("a", SCHEMA_AGAIN, attempt=2)])
    (esc,) = steps[-1]
    assert isinstance(esc, Escalate)
    assert esc.reason.startswith("still blocked after a+fix1 succeeded")
    assert esc.tried == (
        f"a blocked: {SCHEMA}",
        "a+fix1 succeeded: did a thing",
        "a+2 blocked: " + " ".join(SCHEMA_AGAIN.split()),
    )
    assert "orchestrator tail a+fix1" in esc.next_step
    assert "--resume" in esc.next_step


def test_a_build_escalation_says_what_the_fixer_that_succeeded_did() -> None:
    _, steps = play([build(1, "t::a"), fixer("+build+fix1"), build(2, "t::a")])
    (esc,) = steps[-1]
    assert isinstance(esc, Escalate)
    assert esc.reason.startswith("still blocked after +build+fix1 succeeded")
    assert esc.tried == (
        "+build1 failed: failing t::a",
        "+build+fix1 succeeded: did a thing",
        "+build2 failed: failing t::a",
    )
    assert esc.blocker == "failing t::a"


def test_the_escalation_names_the_blocker_that_stopped_it_not_an_earlier_one() -> None:
    capacity = Capacity(10, max_fix_cycles=1)
    _, steps = play([build(1, "t::a"), fixer("+build+fix1"), build(2, "t::b")], capacity)
    (esc,) = steps[-1]
    assert isinstance(esc, Escalate)
    assert esc.blocker == "failing t::b"


def test_a_silent_build_failure_is_blocked_by_what_the_check_said() -> None:
    silent = BuildFailed(1, 1, "", (), "`make` exited 1")
    _, (esc,) = decide(RecoveryState(), silent, Capacity(10, no_fixer="no fixer here"))
    assert isinstance(esc, Escalate)
    assert esc.blocker == "`make` exited 1"


def test_no_fixer_in_the_plan_escalates_at_once_with_commands_that_work() -> None:
    capacity = Capacity(
        10,
        no_fixer="the plan has no fixer: section",
        resume="orchestrator run p.yaml --resume --responses r",
        tail="orchestrator tail --responses r",
    )
    for event in (blocked("a"), build(1, "t::a")):
        _, (esc,) = decide(RecoveryState(), event, capacity)
        assert isinstance(esc, Escalate)
        assert esc.reason == "no fixer: the plan has no fixer: section"
        assert "tail" not in esc.next_step, "no fixer ran: there is nothing to read"
        assert esc.next_step.startswith("add a fixer: section to the plan")
        assert esc.next_step.endswith("orchestrator run p.yaml --resume --responses r")


def test_next_steps_name_the_fixer_with_the_run_s_own_tail_command() -> None:
    capacity = Capacity(10, tail="orchestrator tail --responses r")
    _, steps = play([blocked("a"), fixer("a+fix1", "failed")], capacity)
    (esc,) = steps[-1]
    assert isinstance(esc, Escalate)
    assert "(orchestrator tail --responses r a+fix1)" in esc.next_step


def test_failed_fixer_escalation_names_the_fixer_and_the_blocker() -> None:
    _, steps = play([blocked("a"), fixer("a+fix1", "timed_out")])
    (esc,) = steps[-1]
    assert isinstance(esc, Escalate)
    assert esc.reason == f"a+fix1 timed_out without removing the blocker: {SCHEMA}"
    assert esc.tried[-1] == "a+fix1 timed_out: did a thing"


@pytest.mark.parametrize(
    ("capacity", "event", "reason", "hint"),
    [
        (Capacity(0, max_agents=40), blocked("a"), "no agents left (max_agents=40)",
         "raise limits.max_agents"),
        (Capacity(9, max_depth=1), blocked("a", depth=1), "depth 2, past max_depth=1",
         "raise limits.max_depth"),
        (Capacity(9, max_fix_cycles=0), build(1, "t::a"), "max_fix_cycles=0",
         "raise build.max_fix_cycles"),
    ],
)  # fmt: skip
def test_limit_escalations_are_actionable(
    capacity: Capacity, event: Event, reason: str, hint: str
) -> None:
    _, (esc,) = decide(RecoveryState(), event, capacity)
    assert isinstance(esc, Escalate)
    assert reason in esc.reason
    assert esc.next_step.startswith(hint)


def test_second_fixer_carries_what_was_already_tried() -> None:
    _, steps = play([blocked("a"), fixer("a+fix1"), blocked("a", CONFIG, attempt=2)])
    (spawn,) = steps[-1]
    assert isinstance(spawn, SpawnFixer)
    assert spawn.tried == (f"a blocked: {SCHEMA}", "a+fix1 succeeded: did a thing")
    assert spawn.blocker.agent_id == "a+2"
    assert spawn.depth == 1


def test_a_task_named_build_and_the_build_check_have_fixers_of_their_own() -> None:
    _, steps = play([blocked("build"), build(1, "t::a")])
    assert [describe(a) for s in steps for a in s] == [
        "fix build+fix1 for build",  # the task's
        "fix +build+fix1 for build",  # the build check's: its ids start with the separator
    ]


@pytest.mark.parametrize(
    ("state", "kind", "fix_timeouts", "fixable"),
    [
        ("blocked", "", False, True),
        ("blocked", "config", False, False),
        ("timed_out", "", False, False),
        ("timed_out", "", True, True),
        ("failed", "error", True, False),
        ("failed", "config", True, False),
        ("budget_exceeded", "budget", True, False),
        ("cancelled", "", True, False),
        ("skipped", "", True, False),
        ("lost", "", True, False),
    ],
)
def test_what_is_fixable(state: str, kind: str, fix_timeouts: bool, fixable: bool) -> None:
    assert is_fixable(state, kind=kind, fix_timeouts=fix_timeouts) is fixable


# --- signatures -----------------------------------------------------------------------------

SAME = [
    ("line numbers", "SyntaxError at line 12", "syntaxerror at   line 14"),
    ("temp dirs", "cannot open /tmp/tmpa81kq/app.py", "cannot open /tmp/tmpzz0q3/app.py"),
    ("pytest temp dirs", "/tmp/pytest-of-u/pytest-3/t0/x.py", "/tmp/pytest-of-v/pytest-9/t0/x.py"),
    ("hex ids", "object at 0x7f3a2b1c is gone", "object at 0x55d0e1 is gone"),
    ("commit hashes", "conflict with 3fa9c0d2e", "conflict with 9b1e0aa47"),
    ("uuids", "run 123e4567-e89b-12d3-a456-426614174000 died",
     "run 00000000-0000-0000-0000-00000000beef died"),
    ("timestamps", "2024-05-01T10:22:03Z lock held", "2025-01-09 23:59:59.123 lock held"),
    ("clock times", "at 10:22:03 lock held", "at 9:01:00 lock held"),
    ("durations", "no output for 300s", "no output for 45.5s"),
]  # fmt: skip
DIFFERENT = [
    ("different words", "need the schema", "need the config"),
    ("different files in one temp dir", "/tmp/x1/app.py broke", "/tmp/x1/db.py broke"),
    ("rule codes", "E501 line too long", "E302 expected blank lines"),
    ("names with digits", "test_x0 failed", "test_x1 failed"),
    ("words made of hex letters", "defaced output", "effaced output"),
]


@pytest.mark.parametrize(("a", "b"), [r[1:] for r in SAME], ids=[r[0] for r in SAME])
def test_signature_groups(a: str, b: str) -> None:
    assert signature_of("agent", a) == signature_of("agent", b)


@pytest.mark.parametrize(("a", "b"), [r[1:] for r in DIFFERENT], ids=[r[0] for r in DIFFERENT])
def test_signature_separates(a: str, b: str) -> None:
    assert signature_of("agent", a) != signature_of("agent", b)


def test_normalise_shows_its_placeholders() -> None:
    text = "At 2024-05-01 10:22:03 /tmp/tmpab12/x.py line 12 obj 0xdeadbeef\n  took 3.5s"
    assert normalise(text) == "at <time> <tmp>/x.py line <n> obj <hex> took <n>s"


def test_build_signature_is_the_sorted_failing_tests() -> None:
    one = signature_of("build", "tail one 12", ["t.py::b", "t.py::a"])
    two = signature_of("build", "tail two 14", ["t.py::a", "t.py::b", "t.py::a"])
    assert one == two == "build: t.py::a t.py::b"
    assert signature_of("build", "", ["t.py::a[1]"]) != signature_of("build", "", ["t.py::a[2]"])


def test_build_signature_without_tests_is_the_last_error_line() -> None:
    out_1 = "compiling\nsrc/a.c:12: error: 'x' undeclared\nmake: *** [all] Error 1\n"
    out_2 = "compiling more\nsrc/a.c:40: error: 'x' undeclared\nmake: *** [all] Error 2\n"
    assert signature_of("build", out_1) == signature_of("build", out_2)
    assert signature_of("build", out_1) == "build: src/a.c:<n>: error: 'x' undeclared"


def test_sources_never_share_a_signature() -> None:
    assert signature_of("agent", "boom") != signature_of("build", "boom")


# --- the fixer's prompt ---------------------------------------------------------------------

BLOCKER = Blocker("api", "api+2", "agent", "Need the schema", depth=0)


def make_prompt(template: str, **over: object) -> str:
    args: dict[str, object] = {
        "blocker": BLOCKER,
        "progress_path": "agent-responses/api+2.md",
        "last_lines": ["reading models", "blocked: Need the schema"],
        "build_output": "",
        "tried": ["api+fix1 failed: no luck"],
    }
    args.update(over)
    return fixer_prompt(template, **args)  # type: ignore[arg-type]


def test_default_prompt_carries_everything_the_fixer_needs() -> None:
    text = make_prompt("", build_output="E  assert 1 == 2")
    for part in (
        "Agent api+2 (task api)",
        "Blocker: Need the schema",
        "agent-responses/api+2.md",
        "reading models\nblocked: Need the schema",
        "E  assert 1 == 2",
        "- api+fix1 failed: no luck",
    ):
        assert part in text
    assert "{" not in text


def test_user_template_keeps_other_braces_and_fills_known_fields() -> None:
    text = make_prompt('Fix {task}: {blocker}. Reply as {"ok": true} in {format}.')
    assert text == 'Fix api: Need the schema. Reply as {"ok": true} in {format}.'


def test_filled_values_are_not_expanded_again() -> None:
    text = make_prompt("{last_lines}|{tried}", last_lines=["{tried}"], tried=[])
    assert text == "{tried}|(nothing yet)"


def test_template_without_fields_gets_the_context_appended() -> None:
    text = make_prompt("Be careful.")
    assert text.startswith("Be careful.\n\nYou are a fixer.")
    assert "Blocker: Need the schema" in text


# --- invariants -----------------------------------------------------------------------------

TASKS = ["a", "b", "c"]
REASONS = [SCHEMA, SCHEMA_AGAIN, CONFIG, "disk full at /tmp/x9/y"]
OUTCOMES = ["succeeded", "failed", "blocked", "timed_out", "cancelled"]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_one_fixer_per_blocker_and_never_more_agents_than_allowed(data: st.DataObject) -> None:
    state = RecoveryState()
    groups: set[str] = set()
    ids: set[str] = set()
    spawned: list[str] = []
    attempts = dict.fromkeys(TASKS, 1)
    for _ in range(data.draw(st.integers(1, 25))):
        capacity = Capacity(
            agents_left=data.draw(st.integers(0, 3)),
            max_depth=data.draw(st.integers(0, 2)),
            max_fix_cycles=data.draw(st.integers(0, 2)),
            fix_timeouts=data.draw(st.booleans()),
        )
        kind = data.draw(st.sampled_from(["blocked", "ended", "fixer", "build"]))
        task = data.draw(st.sampled_from(TASKS))
        event: Event
        if kind == "blocked":
            event = blocked(task, data.draw(st.sampled_from(REASONS)), attempts[task])
        elif kind == "ended":
            state_name = data.draw(st.sampled_from(["succeeded", "failed", "timed_out"]))
            event = ended(task, state_name, attempts[task])
        elif kind == "fixer" and spawned:
            event = fixer(data.draw(st.sampled_from(spawned)), data.draw(st.sampled_from(OUTCOMES)))
        else:
            event = build(1, data.draw(st.sampled_from(["t::a", "t::b", "t::c"])))
        state, actions = decide(state, event, capacity)
        assert actions, "every input gets an answer"
        spawns = [a for a in actions if isinstance(a, SpawnFixer)]
        retries = [a for a in actions if isinstance(a, RetryTask)]
        assert len(spawns) + len(retries) <= capacity.agents_left
        for spawn in spawns:
            assert spawn.blocker.group not in groups, "a blocker got a second fixer"
            assert spawn.fixer_id not in ids
            assert spawn.depth <= capacity.max_depth
            groups.add(spawn.blocker.group)
            ids.add(spawn.fixer_id)
            spawned.append(spawn.fixer_id)
        for retry in retries:
            assert retry.attempt == attempts[retry.task_id] + 1
            attempts[retry.task_id] = retry.attempt
    assert state.build_cycles() <= 2
