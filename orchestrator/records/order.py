"""The writer thread's order: of the writes it has taken in, which it carries out next.

Plain data, the thread's own (the loop never touches it); the rules it keeps are the
writer's (`orchestrator.records.writer`): a key's writes in order, the journal's records in
order and ahead of other agents' file writes but after their own agent's status line, a
write without a key as a fence, and what someone waits for one by one ahead of the rest.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

Write = Callable[[], None]
MAX_RECORDS = 1024
"""At most this many of the journal's records are written as one."""


@dataclass(slots=True)
class Queued:
    seq: int
    """Its place in the order of submission (1 for the first write ever submitted)."""
    write: Write
    key: str | None
    record: bool
    last: bool


class Order:
    """What the thread has taken in and not yet carried out, and which of it goes next.

    The thread's own: the loop never touches it. Every choice it makes is a write whose
    predecessors (see the module) are all carried out: the oldest write has none left, and the
    journal's oldest record waits at most for the writes of its key, oldest first."""

    def __init__(self) -> None:
        self.pending: OrderedDict[int, Queued] = OrderedDict()
        self.files: dict[str, deque[int]] = {}
        """Per key, its file writes not yet carried out."""
        self.lasts: dict[str, deque[int]] = {}
        """Per key, its last writes (status lines) not yet carried out."""
        self.records: deque[int] = deque()
        self.fences: deque[int] = deque()
        self.urgent: list[int] = []
        """A heap of the writes someone waits for one by one (`FileWriter.carried`)."""
        self.top = 0
        """The last write taken in."""

    def add(self, item: Queued) -> None:
        self.pending[item.seq] = item
        self.top = item.seq
        if item.record:
            self.records.append(item.seq)
        if item.key is None:
            self.fences.append(item.seq)
        elif not item.record:
            _chain(self.files, item.key).append(item.seq)
            if item.last:
                _chain(self.lasts, item.key).append(item.seq)

    def oldest(self) -> int:
        return next(iter(self.pending))

    def emptied(self) -> Order:
        """A new order that goes on from this one, which holds nothing: its tables at their
        smallest again."""
        assert not self.pending
        fresh = Order()
        fresh.top = self.top
        fresh.urgent = [seq for seq in self.urgent if seq > self.top]  # not taken in yet
        heapq.heapify(fresh.urgent)
        return fresh

    def next(self) -> list[Queued]:
        """What to carry out now, as one: the journal's oldest records while nothing they
        follow is left (the last one's write writes them all); else the oldest file write of
        the key the oldest record waits for; else, with no record left, the oldest file write
        of the key of the oldest write someone waits for (an agent's create, which its start
        waits for); else the oldest write."""
        records = self.records
        fence = self.fences[0] if self.fences else math.inf
        run: list[Queued] = []
        for seq in records:
            item = self.pending[seq]
            if seq >= fence or len(run) == MAX_RECORDS:
                break
            assert item.key is not None  # a record without a key is a fence
            lasts = self.lasts.get(item.key)
            if lasts and lasts[0] < seq:  # its agent's status line goes first
                if not run:
                    return [self.pending[self.files[item.key][0]]]
                break
            run.append(item)
        if run:
            return run
        if not records and (wanted := self._wanted_file(fence)) is not None:
            return [wanted]
        return [self.pending[self.oldest()]]

    def _wanted_file(self, fence: float) -> Queued | None:
        urgent, pending = self.urgent, self.pending
        while urgent and urgent[0] not in pending and urgent[0] <= self.top:
            heapq.heappop(urgent)  # carried out already
        if not urgent or urgent[0] not in pending:
            return None  # not taken in yet: next time
        item = pending[urgent[0]]
        if item.key is None or item.record:
            return None  # a fence or a record: they go in the order above
        first = self.files[item.key][0]
        return pending[first] if first < fence else None

    def done(self, item: Queued) -> None:
        del self.pending[item.seq]
        if item.record:
            self.records.popleft()
        if item.key is None:
            self.fences.popleft()
        elif not item.record:
            _pop(self.files, item.key, item.seq)
            if item.last:
                _pop(self.lasts, item.key, item.seq)


def _chain(chains: dict[str, deque[int]], key: str) -> deque[int]:
    """The key's chain, made on its first write (not a new deque for every write, as
    ``setdefault`` would)."""
    chain = chains.get(key)
    if chain is None:
        chain = chains[key] = deque()
    return chain


def _pop(chains: dict[str, deque[int]], key: str, seq: int) -> None:
    chain = chains[key]
    assert chain[0] == seq, "a key's writes are carried out in order"
    chain.popleft()
    if not chain:
        del chains[key]
