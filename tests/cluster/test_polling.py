"""One poll in flight per node: the driver's `Poller` against a host stand-in (an object
with Ray's ``actor.method.remote(...)`` shape whose poll answers from a queue)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from orchestrator.cluster.polling import Poller, expecting
from orchestrator.cluster.wire import Batch, Change
from orchestrator.events import Text

pytestmark = pytest.mark.timeout(30)


class NodeLost(Exception):
    pass


class _Method:
    def __init__(self, fn: Any) -> None:
        self.remote = fn


class Host:
    """Answers each poll with the next thing put in ``answers`` (a dict, or an exception)."""

    def __init__(self) -> None:
        self.answers: asyncio.Queue[dict[str, Batch] | BaseException] = asyncio.Queue()
        self.calls = 0
        self.poll = _Method(self._poll)

    async def _poll(self, window: float) -> dict[str, Batch]:
        self.calls += 1
        answer = await self.answers.get()
        if isinstance(answer, BaseException):
            raise answer
        return answer


def said(text: str, *, done: bool = False) -> Batch:
    change = Change("x", "b", "b", b"") if done else None
    return Batch((Text(text),), True, done, change)


async def test_one_call_brings_every_attempt_its_own_batch() -> None:
    host = Host()
    poller = Poller(host, (NodeLost,), 0.0)
    async with asyncio.TaskGroup() as tg:
        polling = tg.create_task(poller.run())
        async with expecting(poller, "a") as a, expecting(poller, "b") as b:
            await host.answers.put({"a": said("from a"), "b": said("from b", done=True)})
            got_a, got_b = await a.get(), await b.get()
            assert isinstance(got_a, Batch)
            assert isinstance(got_b, Batch)
            assert got_a.events == (Text("from a"),)
            assert got_b.done
            assert host.calls in (1, 2)  # the second call waits for the next answer
            await host.answers.put({"gone": said("nobody waits")})  # dropped, not an error
            await host.answers.put({"a": said("more")})
            more = await a.get()
            assert isinstance(more, Batch)
            assert more.events == (Text("more"),)
        polling.cancel()


async def test_a_lost_node_is_handed_to_every_attempt_now_and_later() -> None:
    host = Host()
    poller = Poller(host, (NodeLost,), 0.0)
    async with asyncio.TaskGroup() as tg:
        polling = tg.create_task(poller.run())
        async with expecting(poller, "a") as a, expecting(poller, "b") as b:
            await host.answers.put(NodeLost("raylet died"))
            assert isinstance(await a.get(), NodeLost)
            assert isinstance(await b.get(), NodeLost)
        await polling  # it ended by itself
        async with expecting(poller, "late") as late:
            assert isinstance(late.get_nowait(), NodeLost)


async def test_a_host_with_no_attempt_is_not_polled() -> None:
    host = Host()
    poller = Poller(host, (NodeLost,), 0.0)
    async with asyncio.TaskGroup() as tg:
        polling = tg.create_task(poller.run())
        for _ in range(5):
            await asyncio.sleep(0)
        assert host.calls == 0
        async with expecting(poller, "a") as a:
            await host.answers.put({"a": said("hi")})
            assert isinstance(await a.get(), Batch)
        assert host.calls >= 1
        polling.cancel()
