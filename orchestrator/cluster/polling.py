"""One poll in flight per node: the driver's side of `NodeHost.poll`.

A `Poller` per host calls the host's ``poll`` in a loop while attempts run there and hands
each attempt its batches (`expect` gives the queue an attempt reads). The driver's cost is
then one call per batch of the whole node, not per attempt: a node whose 30 agents each say
something within the same 50 ms window costs one call instead of 30. A poller with no
attempt to wait for makes no call.

A call that fails is handed to every attempt waiting on that host (as the exception, which
each raises as its own: a lost node ends them ``lost``); a lost node's poller ends, and so
is handed at once to any attempt that expects it later. Pollers run in the cluster
session's task group (`Cluster.session`) and never raise.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from orchestrator.cluster.wire import Batch

WINDOW = 0.05
"""How long a node gathers its attempts' events into one batch (at least; see `window_for`)."""
MAX_CALLS = 400.0
"""Polls a second that busy nodes may cost the driver together: at ~0.85 ms of its CPU each
(docs/cluster.md), about a third of a core."""
FAULT_PAUSE = 1.0
"""Seconds before polling again a host whose call failed without its node being lost."""

Delivery = Batch | BaseException


def window_for(nodes: int) -> float:
    """Each node's window when ``nodes`` nodes are live: `WINDOW`, or wider once that many
    busy nodes would poll more than `MAX_CALLS` times a second together (100 nodes: 250 ms,
    so a progress file lags by up to that much)."""
    return max(WINDOW, nodes / MAX_CALLS)


class Poller:
    """The batches of one host's attempts, by agent id."""

    def __init__(self, actor: Any, lost: tuple[type[BaseException], ...], window: float) -> None:
        self.actor = actor
        self.window = window
        self._lost = lost
        self._queues: dict[str, asyncio.Queue[Delivery]] = {}
        self._someone = asyncio.Event()
        self.dead: BaseException | None = None
        """What ended this poller: its node was lost."""

    def expect(self, agent_id: str) -> asyncio.Queue[Delivery]:
        """The queue ``agent_id``'s batches come in (make it before the attempt starts)."""
        queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self._queues[agent_id] = queue
        if self.dead is not None:
            queue.put_nowait(self.dead)
        self._someone.set()
        return queue

    def forget(self, agent_id: str) -> None:
        self._queues.pop(agent_id, None)

    async def run(self) -> None:
        """Poll while anyone waits, until the node is lost or the session ends."""
        while True:
            if not self._queues:
                self._someone.clear()
                await self._someone.wait()
                continue
            try:
                batches: dict[str, Batch] = await self.actor.poll.remote(self.window)
            except self._lost as exc:
                self.dead = exc
                self._hand_out(exc)
                return
            except Exception as exc:  # a fault of the host: its attempts fail with it
                self._hand_out(exc)
                await asyncio.sleep(FAULT_PAUSE)
                continue
            for agent_id, batch in batches.items():
                queue = self._queues.get(agent_id)
                if queue is not None:
                    queue.put_nowait(batch)

    def _hand_out(self, exc: BaseException) -> None:
        for queue in self._queues.values():
            queue.put_nowait(exc)


@contextlib.asynccontextmanager
async def expecting(poller: Poller, agent_id: str) -> Any:
    """`Poller.expect` for the block's length."""
    try:
        yield poller.expect(agent_id)
    finally:
        poller.forget(agent_id)
