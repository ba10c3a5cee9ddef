"""The one seam the engine uses: where an attempt runs, and what happens to its work after.

`Checkouts.lease` gives each attempt a directory: a checkout of its own at the integration
tip (tasks, fixers, build fixers), the task's own conflicted checkout (its conflict fixer),
or a tool-owned checkout of the integrated tree (the build). `Checkouts.hand_back` seals what
the agent left; a task or fixer that succeeded is landed, anything else is kept as a WIP
commit on its branch. `orchestrator.isolation.inplace` (``isolation: none``) runs
everyone in the workspace.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from orchestrator import ids
from orchestrator.isolation.kept import (
    Kept,
    adopt,
    fingerprint,
    forget,
    markers_left,
    recall,
    remember,
)
from orchestrator.isolation.landing import Conflict, Landed, LandingQueue, refs
from orchestrator.isolation.pool import SlotPool
from orchestrator.isolation.repo import Repo, snapshot_base
from orchestrator.isolation.seal import Sealed, SealFailed, changes, seal, seal_wip, tree_now

Record = Callable[..., None]
"""``journal.record`` (or a stand-in): ``record(kind, **fields)``."""


@dataclass(slots=True)
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
    held: str | None = None
    """Set when the agent must not run and its task stays escalated (this reason): its
    kept checkout still holds conflict markers a person has not resolved."""
    changes: Sequence[str] = ()
    """With ``done``: what landed (lines for the progress file), when it landed just now."""


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


def wip_sealers() -> int:
    """How many checkouts of agents that did not succeed are sealed at once: half the CPUs
    this process may run on, at least one.

    Such a seal lands nothing, and it is four to six git processes. A burst of stops
    (``cancel`` after ``cancel``, a deadline, a budget) sealing all at once filled both
    CPUs of a small machine, and the next stop's SIGTERM, the sandbox's end and the control
    socket's answer waited for them (B8); queued, the seals take their turn after.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // 2)


def work_branch(run_id: str, agent_id: str) -> str:
    """The branch an agent's checkout is on (the delivery is ``orchestrator/<run>``)."""
    return f"orchestrator/work/{run_id}/{agent_id}"


def title_of(prompt: str, task_id: str) -> str:
    first = next((line.strip() for line in prompt.splitlines() if line.strip()), "")
    return (first[:69] + "...") if len(first) > 72 else (first or task_id)


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
        self._kept: dict[str, Kept] = {}
        """Escalated conflicts whose checkout is kept for a person (found again on resume)."""
        self._sealers = asyncio.Semaphore(wip_sealers())

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
            kept = await recall(git, self.refs["ns"])
            self._kept = {t: k for t, k in kept.items() if t not in self.landed}
        self.record(
            "run", isolation="worktree", repo=str(self.repo.top), shadow=self.repo.shadow,
            git_dir=str(self.repo.git.git_dir),
            base=base, integration_ref=self.refs["integration"], pool=str(self.repo.pool_root),
        )  # fmt: skip

    async def run_again(self, task_id: str) -> None:
        """The task changed in the plan since (on resume): it runs again even though its work
        landed, and a conflicted checkout kept for it is no longer waited on (unlocked)."""
        self.landed.pop(task_id, None)
        kept = self._kept.pop(task_id, None)
        if kept is not None:
            await forget(self.repo.git, self.refs["ns"], task_id)
            await self.pool.release(kept.slot)

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
        if role == "task" and task_id in self._kept:
            return await self._by_person(agent_id, self._kept[task_id])
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
                async with self._sealers:  # in turn: see `wip_sealers`
                    await seal_wip(git, slot, note=state)
                    await self.pool.release(slot)
            elif place.task_id in self._kept:  # as its fixer left it: not a person's work
                await self._keep(self._kept[place.task_id])
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
            self._kept.pop(place.task_id, None)
            await forget(git, self.refs["ns"], place.task_id)
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
        lines.append(f"conflict: {', '.join(conflict.paths)} with the integrated work")
        kept = Kept(place.task_id, place.agent_id, place.slot, place.path, conflict.paths,
                    title_of(prompt, place.task_id))  # fmt: skip
        if place.conflict is not None:  # its fixer's resolution conflicts again: a person
            await seal_wip(git, place.slot, note="conflict fixer")
            await self._keep(kept)
            return HandBack("failed", kept.by_hand(), lines)
        await self._write_markers(place.slot, conflict.integration)
        self._conflicts[place.task_id] = Place(
            place.path, place.agent_id, place.task_id, place.role, place.slot, place.branch,
            conflict.integration, conflict=conflict,
        )  # fmt: skip
        await self._keep(kept)
        others = "; ".join(conflict.others) or "earlier tasks"
        # the way to finish by hand comes first: escalations quote a blocker's first 300 chars
        return HandBack("blocked", (
            f"merge conflict landing {place.task_id}: {', '.join(conflict.paths)}. "
            f"{kept.by_hand()}. Those paths were also changed by work that landed first "
            f"({others}). This task meant: {kept.title}. The conflict markers are in the "
            f"checkout {place.path}: keep both intents, revert neither, remove every marker."
        ), lines)  # fmt: skip

    async def _write_markers(self, slot: Path, integration: str) -> None:
        ident = await self.repo.git.identity()
        await self.repo.git.run("-c", "merge.conflictStyle=zdiff3", "merge", "--no-ff",
                                "--no-commit", integration, at=slot, env=ident,
                                check=False)  # fmt: skip

    async def _keep(self, kept: Kept) -> None:
        """Locked as kept (no lease takes it; it does not count against the run's slots),
        and remembered in git so that ``--resume`` finds it."""
        await self.pool.release(kept.slot, keep=f"run={self.run_id} task={kept.task_id}")
        kept = replace(kept, left=await fingerprint(self.repo.git, kept.slot, kept.paths))
        await remember(self.repo.git, self.refs["ns"], kept)
        self._kept[kept.task_id] = kept

    async def _by_person(self, agent_id: str, kept: Kept) -> Place:
        """On resume: land what a person committed in the kept checkout, without an agent;
        or, while conflict markers remain there, keep the task escalated."""
        git = self.repo.git
        task_id = kept.task_id
        left = await markers_left(git, kept.slot, kept.paths)
        if left:
            return Place(Path(), agent_id, task_id, held=(
                f"conflict markers are still in {', '.join(left)} in the kept checkout "
                f"{kept.path}: nothing was landed and no agent was started. {kept.by_hand()}"
            ))  # fmt: skip
        if await fingerprint(git, kept.slot, kept.paths) == kept.left:
            return Place(Path(), agent_id, task_id, held=(
                f"nothing was changed in the kept checkout {kept.path} since the run left it "
                f"there: nothing was landed and no agent was started. {kept.by_hand()}"
            ))  # fmt: skip
        tip = await adopt(git, kept.slot, message=f"{task_id}: the conflict resolved by hand")
        current = await self.queue.tip()
        base = await git.out("merge-base", tip, current)
        result = await self.queue.land(
            task_id, agent=kept.agent_id, kind="by a person", title=kept.title,
            summary=f"The merge conflict in {', '.join(kept.paths)} was resolved by hand "
            f"in {kept.path}.", tip=tip, base=base,
        )  # fmt: skip
        if isinstance(result, Conflict):  # the integration moved on, or the merge was undone
            await self._write_markers(kept.slot, result.integration)
            await self._keep(replace(kept, paths=result.paths))
            return Place(Path(), agent_id, task_id, held=(
                f"the resolution committed by hand in {kept.path} conflicts with the integrated "
                f"work in {', '.join(result.paths)}; the new conflict markers are there. "
                f"{self._kept[task_id].by_hand()}"
            ))  # fmt: skip
        lines = await self._landed_by_person(agent_id, kept, result)
        return Place(Path(), agent_id, task_id, done=lines[-1], changes=lines[:-1])

    async def _landed_by_person(self, agent_id: str, kept: Kept, result: Landed) -> list[str]:
        """Its change lines, then the reason it ends with."""
        git = self.repo.git
        landed = await changes(git, f"{result.commit}^", result.commit)
        self.record("agent", id=agent_id, checkout=str(kept.slot), tip=result.commit,
                    changes=[[c.path, c.added, c.removed] for c in landed])  # fmt: skip
        del self._kept[kept.task_id]
        await forget(git, self.refs["ns"], kept.task_id)
        self.landed[kept.task_id] = result.commit
        self.record("task", id=kept.task_id, landed=result.commit, landed_order=result.order,
                    landed_by="person", resolved=list(result.resolved) or None)  # fmt: skip
        await self.pool.release(kept.slot)  # no longer kept: the pool may reuse it
        return [
            *(f"changed: {c.line()}" for c in landed),
            f"landed: {result.commit[:12]} (#{result.order} on the integration ref)",
            f"landed by a person: the resolution committed in {kept.path} landed as "
            f"{result.commit[:12]} (#{result.order} on the integration ref); no agent ran",
        ]

    async def _seal_resolution(self, place: Place) -> Sealed:
        assert place.slot is not None
        assert place.conflict is not None
        git = self.repo.git
        slot = place.slot
        left = await markers_left(git, slot, place.conflict.paths)
        if left:
            raise SealFailed(f"error: conflict markers left in {left[0]}")
        await git.run("merge", "--quit", at=slot, check=False)
        message = f"{place.task_id}: resolve the conflict with the integrated work"
        integration = place.conflict.integration
        tree, head = await tree_now(git, slot)
        assert head is not None
        parents = [head] if head == integration else [head, integration]
        tip = await git.commit_tree(tree, parents, message)
        await git.run("update-ref", f"refs/heads/{place.branch}", tip)
        return Sealed(tip, integration, await changes(git, integration, tip))
