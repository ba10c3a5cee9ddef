"""What monitors may ask of a live run: non-blocking peeks and blocking waits.

The read side of the scheduler: `Run` inherits these and is the only writer of the records
they read. Waits return only once the records of the transition they report are on disk (the
recorder's writer thread has carried them out), so whoever is told has nothing more to read
than the progress file and the journal already hold.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING

from orchestrator.engine.state import AgentRecord, Peek, TaskRecord

if TYPE_CHECKING:
    from orchestrator.engine.recorder import Recorder
    from orchestrator.engine.repairs import Repairs
from orchestrator.errors import UnknownAgentError
from orchestrator.events import TERMINAL_STATES, AgentState


class RunQueries:
    """Peeks and waits over a run's agent and task records."""

    agents: dict[str, AgentRecord]
    tasks: dict[str, TaskRecord]
    recorder: Recorder
    repairs: Repairs
    _interrupted: int | None
    _finished: asyncio.Event
    _tg: asyncio.TaskGroup | None

    @property
    def interrupted(self) -> int | None:
        """The signal that stopped the run, if one did."""
        return self._interrupted

    @property
    def closing(self) -> bool:
        """The run's own work is over: its final build check started, or it has ended; a
        task added now could run after its last check (`orchestrator.engine.growth`)."""
        return self._finished.is_set() or self.repairs.final_started

    @property
    def dispatching(self) -> bool:
        """The run has started dispatching (its agents' task group is open)."""
        return self._tg is not None

    def exit_code(self) -> int:
        """0 when every task succeeded and the build (if any) passed; see docs/commands.md."""
        if self.recorder.failure is not None:
            return 1  # the run could not go on (docs/commands.md)
        if self._interrupted is not None:
            return 128 + self._interrupted
        ok = all(t.state == "succeeded" for t in self.tasks.values())
        return 0 if ok and self.repairs.build_state in (None, "passed") else 1

    def peek(self, agent_id: str) -> Peek:
        rec = self._record(agent_id)
        return Peek(rec.id, rec.state, tuple(rec.lines), rec.reason)

    async def wait(self, agent_id: str) -> AgentState:
        """Block until the agent has ended; for a task's first attempt, until the task settled."""
        if agent_id in self.tasks:
            task = self.tasks[agent_id]
            if not task.final:
                if task.settled is None:
                    task.settled = asyncio.Event()
                await task.settled.wait()
            await self.recorder.written()  # told only once its records are on disk
            return task.state
        rec = self._record(agent_id)
        if rec.state not in TERMINAL_STATES:
            if rec.done is None:
                rec.done = asyncio.Event()
            await rec.done.wait()
        await self.recorder.written()
        return rec.state

    async def wait_any(self, agent_ids: Iterable[str]) -> tuple[str, AgentState]:
        """Block until the first of ``agent_ids`` has ended; return its id and state."""
        ids = list(agent_ids)
        for agent_id in ids:
            self._check_known(agent_id)
        async with asyncio.TaskGroup() as tg:
            waiters = {tg.create_task(self.wait(a)): a for a in ids}
            done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for p in pending:
                p.cancel()
        first = next(iter(done))
        return waiters[first], first.result()

    def _record(self, agent_id: str) -> AgentRecord:
        """The agent, or for a task id the task's latest attempt (a stand-in before one)."""
        trec = self.tasks.get(agent_id)
        if trec is not None and trec.attempts:
            return self.agents[trec.attempts[-1]]
        rec = self.agents.get(agent_id)
        if rec is None:
            if trec is None:
                raise UnknownAgentError(agent_id)
            rec = AgentRecord(agent_id, agent_id, trec.task.agent, "task", 1, 0, None)
            rec.state, rec.reason = trec.state, trec.reason
        return rec

    def _check_known(self, agent_id: str) -> None:
        if agent_id not in self.agents and agent_id not in self.tasks:
            raise UnknownAgentError(agent_id)

    def _subtree(self, agent_id: str) -> list[str]:
        """The agent and every agent it spawned, parents first; then the tasks they added
        that have not started yet (their ids, so they are settled instead of started)."""
        out, todo = [agent_id], [agent_id]
        while todo:
            rec = self.agents.get(todo.pop())
            for child in rec.children if rec else ():
                out.append(child)
                todo.append(child)
        mine = set(out)
        waiting = [t.task.id for t in self.tasks.values() if t.added_by in mine and not t.attempts]
        return out + waiting
