"""The one seam the engine uses: where an attempt runs, and what happens to its work after.

`Checkouts.lease` gives each attempt a directory: a checkout of its own at the integration
tip (tasks, fixers, build fixers), the task's own conflicted checkout (its conflict fixer),
or a tool-owned checkout of the integrated tree (the build). `Checkouts.hand_back` seals what
the agent left; a task or fixer that succeeded is landed, anything else is kept as a WIP
commit on its branch. `InPlace` (``isolation: none``) runs everyone in the workspace.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from orchestrator import ids
from orchestrator.isolation.landing import Conflict, LandingQueue, refs
from orchestrator.isolation.pool import SlotPool
from orchestrator.isolation.repo import Repo, snapshot_base
from orchestrator.isolation.seal import Sealed, SealFailed, changes, seal, seal_wip, tree_now

Record = Callable[..., None]
"""``journal.record`` (or a stand-in): ``record(kind, **fields)``."""


@dataclass
class Place:
    """Where one attempt runs."""

    path: Path
    agent_id: str = ""
    task_id: str = ""
    role: str = "task"
    slot: Path | None = None
    branch: str = ""
    base: str = ""
    done: str | None = None
    """Set when the agent need not run: its task's work has landed already (this reason)."""
    conflict: Conflict | None = None
    """For a conflict fixer: what it resolves."""


@dataclass
class HandBack:
    state: str
    reason: str
    changes: list[str] = field(default_factory=list)


class Workspaces(Protocol):
    """What the engine asks of isolation (`Checkouts`, or `InPlace` for ``isolation: none``)."""

    async def lease(self, agent_id: str, role: str, task_id: str) -> Place: ...

    async def hand_back(
        self, place: Place, state: str, reason: str, *, summary: str, kind: str, prompt: str
    ) -> HandBack: ...


def work_branch(run_id: str, agent_id: str) -> str:
    """The branch an agent's checkout is on (the delivery is ``orchestrator/<run>``)."""
    return f"orchestrator/work/{run_id}/{agent_id}"


def title_of(prompt: str, task_id: str) -> str:
    first = next((line.strip() for line in prompt.splitlines() if line.strip()), "")
    return (first[:69] + "...") if len(first) > 72 else (first or task_id)


class InPlace:
    """``isolation: none``: every agent works in the workspace itself, as it always did."""

    def __init__(self, workspace: Path, *, warn: Callable[[str], None] | None = None) -> None:
        self.workspace = workspace
        self._warn = warn
        self._writers: set[str] = set()
        self._warned = False

    async def lease(self, agent_id: str, role: str, task_id: str) -> Place:
        if role != "build":
            if self._writers and self._warn is not None and not self._warned:
                self._warned = True
                self._warn(
                    f"warning: isolation is none and {agent_id} writes in {self.workspace} while "
                    f"{', '.join(sorted(self._writers))} still run: their edits can overwrite "
                    "each other (hint: drop isolation: none)"
                )
            self._writers.add(agent_id)
        return Place(self.workspace, agent_id, task_id, role)

    async def hand_back(
        self, place: Place, state: str, reason: str, *, summary: str, kind: str, prompt: str
    ) -> HandBack:
        self._writers.discard(place.agent_id)
        return HandBack(state, reason)


class Checkouts:
    """Per-agent git checkouts of ``repo`` for one run, and the landing of their work."""

    def __init__(
        self, repo: Repo, run_id: str, *, max_slots: int, record: Record,
        exclude: list[str],
    ) -> None:  # fmt: skip
        self.repo = repo
        self.run_id = run_id
        self.pool = SlotPool(repo, run_id=run_id, max_slots=max_slots)
        self.queue = LandingQueue(repo.git, run_id, state_dir=repo.state)
        self.record = record
        self.exclude = exclude
        self.refs = refs(run_id)
        self.base = ""
        self.clean_base = False
        self.landed: dict[str, str] = {}
        self.delivered: list[str] = []
        """What the delivery said (`setup.deliver_run`), for the report."""
        self._conflicts: dict[str, Place] = {}
        self._carry: dict[str, tuple[str, str]] = {}

    async def start(self, *, resume: bool) -> None:
        """Fix the run's base (a snapshot of the user's checkout) and its integration ref;
        on resume, git says what landed and which interrupted attempts left work."""
        git = self.repo.git
        base = await git.rev(self.refs["base"]) if resume else None
        if base is None:
            base, clean = await snapshot_base(
                self.repo, exclude=self.exclude,
                message=f"orchestrator: working tree snapshot for {self.run_id}",
            )  # fmt: skip
            await git.run("update-ref", self.refs["base"], base)
            await git.run("update-ref", self.refs["integration"], base)
            if clean:
                await git.run("update-ref", f"{self.refs['ns']}/clean", base)
        self.base = base
        self.clean_base = await git.rev(f"{self.refs['ns']}/clean") is not None
        self.landed = await self.queue.landed()
        self.queue.order = len(self.landed)
        if resume:
            await self.pool.reclaim()
            await self._find_carried()
        self.record(
            "run", isolation="worktree", repo=str(self.repo.top), shadow=self.repo.shadow,
            git_dir=str(self.repo.git.git_dir),
            base=base, integration_ref=self.refs["integration"], pool=str(self.repo.pool_root),
        )  # fmt: skip

    async def _find_carried(self) -> None:
        """Interrupted attempts whose sealed work a resumed task continues from."""
        git = self.repo.git
        prefix = f"refs/heads/{work_branch(self.run_id, '')}"
        out = await git.out("for-each-ref", "--format=%(refname) %(objectname)", prefix)
        for line in out.splitlines():
            name, _, tip = line.partition(" ")
            agent = name.removeprefix(prefix)
            task = ids.task_of_attempt(agent)
            if task is None or task in self.landed:
                continue
            base = await git.rev(f"{self.refs['ns']}/bases/{agent}")
            if base is not None and base != tip:
                self._carry[task] = (tip, base)

    async def lease(self, agent_id: str, role: str, task_id: str) -> Place:
        if role == "task" and task_id in self.landed:
            return Place(Path(), agent_id, task_id, role,
                         done=f"its work landed already ({self.landed[task_id][:12]})")  # fmt: skip
        if role == "fixer" and task_id in self._conflicts:
            place = self._conflicts[task_id]
            self.record("agent", id=agent_id, checkout=str(place.slot), branch=place.branch,
                        base=place.base, conflict=list(place.conflict.paths) if place.conflict
                        else None)  # fmt: skip
            return Place(place.path, agent_id, task_id, role, place.slot, place.branch,
                         place.base, conflict=place.conflict)  # fmt: skip
        tip = await self.queue.tip()
        base, start = tip, tip
        if role == "task" and task_id in self._carry:
            start, base = self._carry.pop(task_id)
        branch = work_branch(self.run_id, agent_id)
        lease = await self.pool.lease(agent_id, start, branch=branch)
        await self.repo.git.run("update-ref", f"{self.refs['ns']}/bases/{agent_id}", base)
        self.record("agent", id=agent_id, checkout=str(lease.slot), branch=branch, base=base,
                    start=start)  # fmt: skip
        return Place(self.repo.in_checkout(lease.slot), agent_id, task_id, role, lease.slot,
                     branch, base)  # fmt: skip

    async def hand_back(
        self, place: Place, state: str, reason: str, *, summary: str, kind: str, prompt: str
    ) -> HandBack:
        """Seal the attempt's work; land it if it succeeded. The state it really ended in."""
        if place.done is not None or place.slot is None:
            return HandBack(state, reason)
        git = self.repo.git
        slot = place.slot
        if place.role == "build":
            await self.pool.release(slot)
            return HandBack(state, reason)
        if state != "succeeded":
            if place.conflict is None:
                await seal_wip(git, slot, note=state)
                await self.pool.release(slot)
            # a conflicted checkout stays exactly as it is (locked, kept) for a person
            return HandBack(state, reason)
        try:
            if place.conflict is not None:
                sealed = await self._seal_resolution(place)
            else:
                message = f"{place.agent_id}: work of the agent (sealed by the orchestrator)"
                sealed = await seal(git, slot, branch=place.branch, base=place.base,
                                    message=message)  # fmt: skip
        except SealFailed as exc:
            await self.pool.release(slot)
            return HandBack("failed", str(exc).removeprefix("error: "))
        lines = [f"changed: {c.line()}" for c in sealed.changes] or ["changed: nothing"]
        self.record("agent", id=place.agent_id, tip=sealed.tip,
                    changes=[[c.path, c.added, c.removed] for c in sealed.changes])  # fmt: skip
        landing = place.task_id if place.role == "task" or place.conflict else place.agent_id
        result = await self.queue.land(
            landing, agent=place.agent_id, kind=kind, title=title_of(prompt, landing),
            summary=summary, tip=sealed.tip, base=sealed.base,
        )  # fmt: skip
        if isinstance(result, Conflict):
            return await self._conflicted(place, result, lines, prompt)
        if place.conflict is not None:
            self._conflicts.pop(place.task_id, None)
        self.landed[landing] = result.commit
        self.record("task" if landing == place.task_id else "agent", id=landing,
                    landed=result.commit, landed_order=result.order,
                    resolved=list(result.resolved) or None)  # fmt: skip
        lines.append(f"landed: {result.commit[:12]} (#{result.order} on the integration ref)")
        lines += [f"resolved mechanically: {p} (integrated version kept)" for p in result.resolved]
        await self.pool.release(slot)
        return HandBack(state, reason, lines)

    async def _conflicted(
        self, place: Place, conflict: Conflict, lines: list[str], prompt: str
    ) -> HandBack:
        """Keep the checkout, conflict markers in place; a blocker for one fixer."""
        assert place.slot is not None
        git = self.repo.git
        paths = ", ".join(conflict.paths)
        lines.append(f"conflict: {paths} with the integrated work")
        if place.conflict is not None:  # its fixer's resolution conflicts again: a person
            await seal_wip(git, place.slot, note="conflict fixer")
            await self.pool.release(place.slot, keep=f"run={self.run_id} task={place.task_id}")
            return HandBack("failed", self._by_hand(place, paths), lines)
        ident = await git.identity()
        await git.run("-c", "merge.conflictStyle=zdiff3", "merge", "--no-ff", "--no-commit",
                      conflict.integration, at=place.slot, env=ident, check=False)  # fmt: skip
        self._conflicts[place.task_id] = Place(
            place.path, place.agent_id, place.task_id, place.role, place.slot, place.branch,
            conflict.integration, conflict=conflict,
        )  # fmt: skip
        # locked as kept: no lease takes it, and it does not count against the run's slots
        await self.pool.release(place.slot, keep=f"run={self.run_id} task={place.task_id}")
        others = "; ".join(conflict.others) or "earlier tasks"
        intent = title_of(prompt, place.task_id)
        return HandBack("blocked", (
            f"merge conflict landing {place.task_id}: {paths} were also changed by work that "
            f"landed first ({others}). This task meant: {intent}. The conflict markers are in "
            f"the checkout {place.path}: keep both intents, revert neither, remove every marker. "
            + self._by_hand(place, paths)
        ), lines)  # fmt: skip

    def _by_hand(self, place: Place, paths: str) -> str:
        return (
            f"By hand: cd {place.path}; resolve {paths}; git add -A; git commit; then "
            "orchestrator run PLAN --resume"
        )

    async def _seal_resolution(self, place: Place) -> Sealed:
        assert place.slot is not None
        assert place.conflict is not None
        git = self.repo.git
        slot = place.slot
        markers = await git.run("grep", "-l", "-e", "^<<<<<<< ", "-e", "^>>>>>>> ", "--",
                                *place.conflict.paths, at=slot, check=False)  # fmt: skip
        if markers.out.strip():
            raise SealFailed(f"error: conflict markers left in {markers.out.split()[0]}")
        await git.run("merge", "--quit", at=slot, check=False)
        message = f"{place.task_id}: resolve the conflict with the integrated work"
        integration = place.conflict.integration
        tree, head = await tree_now(git, slot)
        assert head is not None
        parents = [head] if head == integration else [head, integration]
        tip = await git.commit_tree(tree, parents, message)
        await git.run("update-ref", f"refs/heads/{place.branch}", tip)
        return Sealed(tip, integration, await changes(git, integration, tip))
