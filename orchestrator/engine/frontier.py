"""The dependency frontier: which tasks may start now.

``async`` mode releases a task the moment its last dependency succeeds (a counter per
task, O(edges) over the whole run). ``batch`` mode opens one topological wave at a time and
the next only when every task of the open wave has settled (the old way, kept to compare).
Plain data and functions; the scheduler asks and queues what comes back. A task added while
the run goes on (`add`) is released the moment its dependencies succeeded, in either mode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from orchestrator.plan.graph import Graph, dependents_of, waves

Pending = Callable[[str], bool]


class Frontier:
    def __init__(self, graph: Graph, *, mode: Literal["async", "batch"]) -> None:
        self.mode = mode
        # Only tasks that have dependents: a list per leaf was ~80 bytes a task for nothing.
        self._children = {tid: kids for tid, kids in dependents_of(graph).items() if kids}
        self._waiting = {tid: len(deps) for tid, deps in graph.items()}
        self._waves = waves(graph) if mode == "batch" else []
        self._wave = 0
        self._open: set[str] = set()
        self._added: set[str] = set()

    def add(self, task_id: str, deps: Sequence[str], succeeded: Callable[[str], bool]) -> bool:
        """Take in a task added at run time (its dependencies exist); True: it may start now."""
        self._added.add(task_id)
        self._waiting[task_id] = sum(not succeeded(d) for d in deps)
        for dep in deps:
            self._children.setdefault(dep, []).append(task_id)
        return self._waiting[task_id] == 0

    def unmet(self, task_id: str) -> int:
        """How many of the task's dependencies have not succeeded yet (0: it may start)."""
        return self._waiting.get(task_id, 0)

    def dependents(self, task_id: str) -> Sequence[str]:
        return self._children.get(task_id, ())

    def initial(self, pending: Pending) -> list[str]:
        """What may start when the run begins (after earlier successes were counted)."""
        if self.mode == "batch":
            return self._next_wave(pending)
        return [tid for tid, n in self._waiting.items() if n == 0 and pending(tid)]

    def succeeded(self, task_id: str, pending: Pending) -> list[str]:
        """Count a success; in async mode, the dependents it made ready."""
        ready = []
        for child in self._children.get(task_id, ()):
            self._waiting[child] -= 1
            released = self.mode == "async" or child in self._added
            if self._waiting[child] == 0 and released and pending(child):
                ready.append(child)
        return ready

    def settled(self, task_id: str, pending: Pending) -> list[str]:
        """A task reached its final state; in batch mode, the next wave once this one is done."""
        if self.mode != "batch" or task_id not in self._open:
            return []
        self._open.discard(task_id)
        return [] if self._open else self._next_wave(pending)

    def _next_wave(self, pending: Pending) -> list[str]:
        while self._wave < len(self._waves):
            wave = self._waves[self._wave]
            self._wave += 1
            runnable = [t for t in wave if pending(t) and self._waiting[t] == 0]
            if runnable:
                self._open = set(runnable)
                return runnable
        return []
