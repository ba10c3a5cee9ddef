"""Blocker and fixer policy (P10) as a pure state machine: `decide(state, event, capacity)`.

No I/O, no clock, no event loop: the scheduler feeds in what happened and performs the actions
that come back. Every input has an explicit answer (stale or unknown reports get `Wait`).

- A blocker is an attempt that ended ``blocked`` (or ``timed_out``/stalled when the plan sets
  ``fix_timeouts``) or a failed build. Failures, cancellations, budget or agent-count exhaustion
  and configuration errors (``kind="config"``, a build exiting 126/127) are never fixed: the
  subject keeps its own end state (`EndTask`).
- Blockers are grouped by `Blocker.group` (the normalised signature), so the same failure from
  several tasks shares one fixer; timeouts and stalls stay per task. A group gets one fixer, ever:
  while it runs, later reporters wait for it; once it succeeded, a task it has not served retries
  at once and one it served escalates; once it failed or was cancelled, reporters escalate.
- A fixer that succeeds retries each waiting task as a new attempt (or re-runs the build); any
  other end escalates them with what was tried, except cancelled: not a fix, so what waited on it
  ends ``cancelled`` (retrying would pretend it worked; escalating would blame an unfinished fix).
- An attempt whose program denied it tool calls (a blocker of kind ``permission``) is never
  fixed either: a fixer would be denied the same calls. Its task escalates at once, the
  denied calls in the reason, so a person can allow them or make the change.
- A fixer needs a free agent, depth (blocked depth + 1) within ``max_depth`` and, for the build,
  one of ``max_fix_cycles`` (run-wide); else the subject escalates, saying which limit to raise.
  A fixer's own blocker is never fixed: it escalates what the fixer served.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal, TypeAlias, assert_never

from orchestrator import ids
from orchestrator.engine.blockers import Blocker, Source

FixerOutcome: TypeAlias = Literal[
    "succeeded", "failed", "blocked", "timed_out", "cancelled", "budget_exceeded", "lost"
]
NEVER_FIXED_KINDS: frozenset[str] = frozenset({"config", "budget", "permission"})
CONFIG_EXIT_CODES: frozenset[int] = frozenset({126, 127})
"""A build command that cannot run (not executable, not found) is the plan's fault, not code's."""


def is_fixable(state: str, *, kind: str = "", fix_timeouts: bool = False) -> bool:
    """Whether an attempt that ended in ``state`` is a blocker a fixer may try.

    Only ``blocked`` is, and ``timed_out`` when the plan opts in. Never ``failed`` (the agent
    gave up on its own work), ``cancelled``, ``budget_exceeded``, ``skipped``, ``lost``, nor any
    ``config`` or ``budget`` failure kind: a fixer cannot install a program or raise a budget.
    """
    if kind in NEVER_FIXED_KINDS:
        return False
    return state == "blocked" or (fix_timeouts and state == "timed_out")


# --- inputs, limits, actions ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttemptEnded:
    """An attempt of a task ended in ``state`` (an AgentState); ``kind`` is a Failed's kind
    or ``permission`` for a Blocked of that kind."""

    task_id: str
    attempt: int
    state: str
    reason: str = ""
    kind: str = ""
    depth: int = 0
    stalled: bool = False

    @property
    def agent_id(self) -> str:
        return ids.agent_id_of(self.task_id, self.attempt)


@dataclass(frozen=True, slots=True)
class FixerEnded:
    fixer_id: str
    outcome: FixerOutcome
    summary: str = ""


@dataclass(frozen=True, slots=True)
class BuildFailed:
    """Build check ``+build<build_n>`` failed; ``output`` is the tail of what it printed."""

    build_n: int
    exit_code: int
    output: str = ""
    failing_tests: tuple[str, ...] = ()
    why: str = ""
    """What the build check itself said about the failure (its command and exit code)."""


Event: TypeAlias = AttemptEnded | FixerEnded | BuildFailed


@dataclass(frozen=True, slots=True)
class Capacity:
    """What the governor allows at this decision; ``refusal`` says why it starts nothing now."""

    agents_left: int
    max_agents: int = 40
    max_depth: int = 2
    max_fix_cycles: int = 2
    fix_timeouts: bool = False
    refusal: str = ""
    no_fixer: str = ""
    """Why the plan cannot make a fixer for this blocker's subject ("" when it can)."""
    resume: str = "orchestrator run PLAN --resume"
    """The command that continues the run, for next steps."""
    tail: str = "orchestrator tail"
    """The command (with ``--responses`` if needed) that prints an agent's progress file."""


@dataclass(frozen=True, slots=True)
class SpawnFixer:
    fixer_id: str
    blocker: Blocker
    tasks: tuple[str, ...]
    """The tasks it serves so far (empty for the build); others may join while it runs."""
    tried: tuple[str, ...]

    @property
    def depth(self) -> int:
        return self.blocker.depth + 1


@dataclass(frozen=True, slots=True)
class RetryTask:
    task_id: str
    attempt: int

    @property
    def agent_id(self) -> str:
        return ids.agent_id_of(self.task_id, self.attempt)


@dataclass(frozen=True, slots=True)
class Rebuild:
    cycle: int


@dataclass(frozen=True, slots=True)
class Escalate:
    """A human must act: ``task_id`` None means the build."""

    task_id: str | None
    reason: str
    tried: tuple[str, ...]
    next_step: str
    blocker: str = ""
    """The blocker that could not be removed, as one line."""


@dataclass(frozen=True, slots=True)
class EndTask:
    """Not a blocker: the task (None: the build) ends in ``state``, unfixed."""

    task_id: str | None
    state: str
    reason: str


@dataclass(frozen=True, slots=True)
class Wait:
    reason: str


Action: TypeAlias = SpawnFixer | RetryTask | Rebuild | Escalate | EndTask | Wait


# --- state ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subject:
    """A task (or the build) the machine has heard of: its latest attempt and what was tried."""

    attempt: int
    status: Literal["waiting", "retrying", "ended"]
    tried: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Fixer:
    fixer_id: str
    blocker: Blocker
    serves: tuple[str | None, ...]
    """Every subject it was asked to unblock, in order; None is the build."""
    status: Literal["running", "succeeded", "failed", "cancelled"] = "running"


@dataclass(frozen=True, slots=True)
class RecoveryState:
    """Copy-on-write: mappings are never mutated, only replaced."""

    fixers: Mapping[str, Fixer] = field(default_factory=dict)
    subjects: Mapping[str | None, Subject] = field(default_factory=dict)

    def fixer_for(self, group: str) -> Fixer | None:
        return next((f for f in self.fixers.values() if f.blocker.group == group), None)

    def build_cycles(self) -> int:
        return sum(1 for f in self.fixers.values() if f.blocker.source == "build")


Decision: TypeAlias = tuple[RecoveryState, tuple[Action, ...]]


def decide(state: RecoveryState, event: Event, capacity: Capacity) -> Decision:
    """The next state and what the scheduler must do about ``event``."""
    match event:
        case AttemptEnded():
            return _attempt_ended(state, event, capacity)
        case FixerEnded():
            return _fixer_ended(state, event, capacity)
        case BuildFailed():
            return _build_failed(state, event, capacity)
        case _:
            assert_never(event)


def _attempt_ended(state: RecoveryState, ev: AttemptEnded, cap: Capacity) -> Decision:
    sub = state.subjects.get(ev.task_id)
    if sub is not None and (sub.status != "retrying" or ev.attempt != sub.attempt):
        why = f"ignored {ev.agent_id}: task {ev.task_id} is {sub.status} at attempt {sub.attempt}"
        return state, (Wait(why),)
    tried = sub.tried if sub else ()
    if ev.kind == "permission":
        state = _put(state, ev.task_id, Subject(ev.attempt, "waiting", tried))
        hint = "allow the calls it needs (the task's permission_mode or allowed_tools), or "
        blocker = Blocker(ev.task_id, ev.agent_id, "agent", ev.reason, ev.depth)
        why = f"never fixed: {ev.reason}"
        return _escalate(state, cap, blocker, ev.task_id, why, "", hint)
    if not is_fixable(ev.state, kind=ev.kind, fix_timeouts=cap.fix_timeouts):
        if ev.kind in NEVER_FIXED_KINDS:
            why = f"a {ev.kind} failure is never fixed: {ev.reason}"
        elif ev.state == "timed_out":
            why = f"timeouts are not fixed unless the plan sets fix_timeouts: {ev.reason}"
        else:
            why = ev.reason
        state = _put(state, ev.task_id, Subject(ev.attempt, "ended", tried))
        return state, (EndTask(ev.task_id, ev.state, why),)
    source: Source = "agent" if ev.state == "blocked" else "stall" if ev.stalled else "timeout"
    blocker = Blocker(ev.task_id, ev.agent_id, source, ev.reason, ev.depth)
    return _on_blocker(_put(state, ev.task_id, Subject(ev.attempt, "waiting", tried)), blocker, cap)


def _build_failed(state: RecoveryState, ev: BuildFailed, cap: Capacity) -> Decision:
    prev = state.subjects.get(None)
    tried = prev.tried if prev else ()
    if ev.exit_code in CONFIG_EXIT_CODES:
        why = (
            f"{ids.build_id(ev.build_n)} could not run its command (exit {ev.exit_code}): a"
            " configuration error, never fixed; check build.command in the plan and that its"
            " program is installed"
        )
        state = _put(state, None, Subject(ev.build_n, "ended", tried))
        return state, (EndTask(None, "failed", why),)
    said = ev.output if ev.output.strip() else ev.why or f"exit code {ev.exit_code}, no output"
    blocker = Blocker(None, ids.build_id(ev.build_n), "build", said, 0, ev.failing_tests)
    return _on_blocker(_put(state, None, Subject(ev.build_n, "waiting", tried)), blocker, cap)


def _on_blocker(state: RecoveryState, b: Blocker, cap: Capacity) -> Decision:
    who = b.task_id
    verb = {"agent": "blocked", "build": "failed", "timeout": "timed out", "stall": "stalled"}
    note = f"{b.agent_id} {verb[b.source]}: {b.summary()}"
    fixer = state.fixer_for(b.group)
    if fixer is not None:
        return _join(state, fixer, b, note, cap)
    cycles, depth = state.build_cycles(), b.depth + 1
    if b.source == "build" and cycles >= cap.max_fix_cycles:
        why = f"still failing after {cycles} fix cycles (max_fix_cycles={cap.max_fix_cycles})"
        hint = "raise build.max_fix_cycles or "
        return _escalate(state, cap, b, who, f"{why}: {b.summary()}", note, hint)
    if cap.refusal:
        return _escalate(state, cap, b, who, f"no fixer: {cap.refusal}", note, "")
    if cap.no_fixer:
        hint = "add a fixer: section to the plan (docs/plan.md) or "
        return _escalate(state, cap, b, who, f"no fixer: {cap.no_fixer}", note, hint)
    if cap.agents_left <= 0:
        why = f"no agents left (max_agents={cap.max_agents})"
        hint = "raise limits.max_agents or "
        return _escalate(state, cap, b, who, f"{why}: {b.summary()}", note, hint)
    if depth > cap.max_depth:
        why = f"a fixer would run at depth {depth}, past max_depth={cap.max_depth}"
        hint = "raise limits.max_depth or "
        return _escalate(state, cap, b, who, f"{why}: {b.summary()}", note, hint)
    n = 1 + sum(1 for f in state.fixers.values() if f.blocker.task_id == who)
    while ids.fixer_id(who, n) in state.fixers:  # a resumed run may have used that number
        n += 1
    fid = ids.fixer_id(who, n)
    tried = state.subjects[who].tried
    state = replace(state, fixers={**state.fixers, fid: Fixer(fid, b, (who,))})
    spawn = SpawnFixer(fid, b, () if who is None else (who,), tried)
    return _note(state, who, note), (spawn,)


def _join(state: RecoveryState, f: Fixer, b: Blocker, note: str, cap: Capacity) -> Decision:
    """A blocker whose group already had its one fixer."""
    who, fid = b.task_id, f.fixer_id
    if f.status == "running":
        if who not in f.serves:
            f = replace(f, serves=(*f.serves, who))
            state = replace(state, fixers={**state.fixers, fid: f})
        return _note(state, who, note), (Wait(f"{b.agent_id} waits for {fid}, already on it"),)
    if f.status == "succeeded" and who is not None and who not in f.serves:
        state = replace(state, fixers={**state.fixers, fid: replace(f, serves=(*f.serves, who))})
        state = _note(state, who, f"{note} (already fixed by {fid})")
        return _retry(state, who, cap, cap.agents_left, fid)
    if f.status == "succeeded":
        why = f"still blocked after {fid} succeeded: {b.summary()}"
        hint = f"see what {fid} changed ({cap.tail} {fid}), "
        return _escalate(state, cap, b, who, why, note, hint)
    why = f"{fid} already {f.status} on this blocker: {b.summary()}"
    hint = f"read what {fid} tried ({cap.tail} {fid}), "
    return _escalate(state, cap, b, who, why, note, hint)


def _fixer_ended(state: RecoveryState, ev: FixerEnded, cap: Capacity) -> Decision:
    fid = ev.fixer_id
    f = state.fixers.get(fid)
    if f is None:
        return state, (Wait(f"ignored: no fixer {fid}"),)
    if f.status != "running":
        return state, (Wait(f"ignored: {fid} already ended ({f.status})"),)
    status: Literal["succeeded", "failed", "cancelled"] = (
        "succeeded" if ev.outcome == "succeeded" else "cancelled" if ev.outcome == "cancelled"
        else "failed"
    )  # fmt: skip
    state = replace(state, fixers={**state.fixers, fid: replace(f, status=status)})
    note = f"{fid} {ev.outcome}" + (f": {ev.summary}" if ev.summary else "")
    actions: list[Action] = []
    left = cap.agents_left
    for who in f.serves:
        sub = state.subjects.get(who)
        if sub is None or sub.status != "waiting":
            continue
        state = _note(state, who, note)
        if status == "cancelled":
            why = f"{fid} was cancelled, so the blocker stays unresolved: {f.blocker.summary()}"
            state = _put(state, who, replace(state.subjects[who], status="ended"))
            actions.append(EndTask(who, "cancelled", why))
            continue
        if status == "failed":
            why = f"{fid} {ev.outcome} without removing the blocker: {f.blocker.summary()}"
            hint = f"read what {fid} tried ({cap.tail} {fid}), "
            state, acts = _escalate(state, cap, f.blocker, who, why, "", hint)
        elif who is None:
            state = _put(state, None, replace(state.subjects[None], status="retrying"))
            acts = (Rebuild(state.build_cycles()),)
        else:
            state, acts = _retry(state, who, cap, left, fid)
            left -= sum(isinstance(a, RetryTask) for a in acts)
        actions.extend(acts)
    return state, tuple(actions) or (Wait(f"{fid} ended; nothing waits for it"),)


def _retry(state: RecoveryState, who: str, cap: Capacity, left: int, fid: str) -> Decision:
    if cap.refusal or left <= 0:
        why = cap.refusal or f"no agents left (max_agents={cap.max_agents})"
        hint = "" if cap.refusal else "raise limits.max_agents or "
        why = f"{fid} succeeded but no retry can start: {why}"
        return _escalate(state, cap, state.fixers[fid].blocker, who, why, "", hint)
    attempt = state.subjects[who].attempt + 1
    state = _put(state, who, replace(state.subjects[who], attempt=attempt, status="retrying"))
    return state, (RetryTask(who, attempt),)


def _escalate(
    state: RecoveryState,
    cap: Capacity,
    blocker: Blocker,
    who: str | None,
    why: str,
    note: str,
    hint: str,
) -> Decision:
    if note:
        state = _note(state, who, note)
    sub = state.subjects[who]
    state = _put(state, who, replace(sub, status="ended"))
    if who is None:
        step = hint + f"make the build pass by hand, then continue the run: {cap.resume}"
    else:
        step = hint + f"remove the blocker of task {who} by hand, then continue: {cap.resume}"
    return state, (Escalate(who, why, sub.tried, step, blocker.summary()),)


def _put(state: RecoveryState, who: str | None, sub: Subject) -> RecoveryState:
    return replace(state, subjects={**state.subjects, who: sub})


def _note(state: RecoveryState, who: str | None, line: str) -> RecoveryState:
    sub = state.subjects[who]
    return _put(state, who, replace(sub, tried=(*sub.tried, line)))
