"""The writer thread: a run's file writes carried out off the loop, in order, with a barrier."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from conftest import scripted

from orchestrator.agents.pool import AgentPool
from orchestrator.engine.scheduler import Run
from orchestrator.engine.state import RunSettings
from orchestrator.plan.model import Plan, Say, Sleep
from orchestrator.records import writer as writer_module
from orchestrator.records.journal import Journal, load
from orchestrator.records.writer import FileWriter


def hold(gate: threading.Event) -> Callable[[], None]:
    """A write that holds the writer thread until ``gate`` is set."""

    def wait() -> None:
        gate.wait(10)

    return wait


def test_without_its_thread_a_write_is_carried_out_at_once() -> None:
    done: list[int] = []
    w = FileWriter()
    w.submit(lambda: done.append(1))
    assert done == [1]
    told: list[str] = []
    w.when_written(lambda: told.append("now"))
    assert told == ["now"]


async def test_writes_run_off_the_loop_in_order_and_the_barrier_waits_for_them() -> None:
    w = FileWriter()
    gate = threading.Event()
    order: list[int] = []
    threads: set[str] = set()

    def write(i: int) -> Callable[[], None]:
        def run() -> None:
            threads.add(threading.current_thread().name)
            order.append(i)

        return run

    async with asyncio.TaskGroup() as tg:
        w.start()
        runner = tg.create_task(w.run())
        w.submit(hold(gate))  # the thread is held: nothing after it is written yet
        for i in range(100):
            w.submit(write(i))
        told: list[str] = []
        w.when_written(lambda: told.append("told"))
        barrier = tg.create_task(w.written())
        await asyncio.sleep(0.05)
        assert not barrier.done()
        assert told == []
        assert order == []
        gate.set()
        async with asyncio.timeout(10):
            await barrier
        assert order == list(range(100))
        assert told == ["told"]
        assert threads == {"orchestrator-writer"}
        runner.cancel()
    w.submit(write(100))  # stopped: at once again
    assert order[-1] == 100


async def test_what_is_queued_when_it_stops_is_written_before_it_returns() -> None:
    w = FileWriter()
    gate = threading.Event()
    order: list[int] = []
    async with asyncio.TaskGroup() as tg:
        runner = tg.create_task(w.run())
        await asyncio.sleep(0)
        w.submit(hold(gate))
        for i in range(10):
            w.submit(lambda i=i: order.append(i))  # type: ignore[misc]
        runner.cancel()
        asyncio.get_running_loop().call_later(0.05, gate.set)
    assert order == list(range(10))
    assert w.pending == 0


async def test_a_write_that_raises_ends_the_writer_with_its_error() -> None:
    w = FileWriter()

    def broken() -> None:
        raise RuntimeError("a bug in a write")

    async def run_broken() -> None:
        async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
            tg.create_task(w.run())
            await asyncio.sleep(0)
            w.submit(broken)
            await asyncio.sleep(30)

    with pytest.raises(ExceptionGroup) as info:
        await run_broken()
    assert info.group_contains(RuntimeError, match="a bug in a write")


async def test_no_one_is_told_an_agent_ended_before_its_status_line_is_in_its_file(
    make_run: Callable[..., Run], responses: Path
) -> None:
    gate = threading.Event()
    run = make_run(scripted("a", Say("one"), Sleep(3.0), Say("two")))  # 3 s: a loaded loop lags
    async with asyncio.TaskGroup() as tg:
        main = tg.create_task(run.execute())
        async with asyncio.timeout(10):
            while "a" not in run.agents or not any("one" in x for x in run.agents["a"].lines):
                await asyncio.sleep(0.005)
        assert run.agents["a"].state == "running"
        run.recorder.writer.submit(hold(gate))  # hold the writer thread while it sleeps
        waiter = tg.create_task(run.wait("a"))
        async with asyncio.timeout(10):
            while run.agents["a"].state == "running":
                await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)
        assert not waiter.done(), "told before the agent's words were written"
        assert "status:" not in (responses / "a.md").read_text()
        gate.set()
        async with asyncio.timeout(10):
            assert await waiter == "succeeded"
        text = (responses / "a.md").read_text()
        assert "one" in text
        assert text.rstrip().splitlines()[-1].startswith("status: succeeded")
        await main


async def test_a_wait_up_to_a_mark_returns_while_later_writes_are_still_held() -> None:
    """An agent starts once its own start is recorded, not once every later write is."""
    w = FileWriter()
    gate = threading.Event()
    order: list[int] = []
    async with asyncio.TaskGroup() as tg:
        w.start()
        runner = tg.create_task(w.run())
        w.submit(lambda: order.append(0))
        mark = w.mark()
        w.submit(hold(gate))  # everything after the mark is held
        w.submit(lambda: order.append(1))
        async with asyncio.timeout(10):
            await w.written(mark)
        assert order == [0]
        everything = tg.create_task(w.written())
        told: list[str] = []
        w.when_written(lambda: told.append("all"))
        w.when_written(lambda: told.append("mark"), upto=mark)
        assert told == ["mark"]  # at once: that much is written
        await asyncio.sleep(0.05)
        assert not everything.done()
        assert told == ["mark"]
        gate.set()
        async with asyncio.timeout(10):
            await everything
        assert order == [0, 1]
        assert told == ["mark", "all"]
        runner.cancel()


def held(gate: threading.Event, started: threading.Event) -> Callable[[], None]:
    """A write that says it has begun, then holds the writer thread until ``gate`` is set."""

    def wait() -> None:
        started.set()
        gate.wait(10)

    return wait


async def holding(w: FileWriter, key: str, gate: threading.Event) -> None:
    """Submit a write of ``key`` that holds the thread, and return once it has begun."""
    started = threading.Event()
    w.submit(held(gate, started), key)
    assert await asyncio.to_thread(started.wait, 10), "the writer never began the write"


@contextlib.asynccontextmanager
async def held_writer(key: str = "busy") -> AsyncIterator[FileWriter]:
    """A running writer whose thread is held by a write of ``key``: what the block submits
    queues up behind it; at the block's end the thread goes on and everything is written."""
    w = FileWriter()
    gate = threading.Event()
    async with asyncio.TaskGroup() as tg:
        w.start()
        runner = tg.create_task(w.run())
        try:
            await holding(w, key, gate)
            yield w
            gate.set()
            async with asyncio.timeout(10):
                await w.written()
        finally:
            gate.set()
            runner.cancel()


def writer_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "orchestrator-writer"}


async def test_stop_ends_a_started_thread_whose_run_task_never_took_a_step() -> None:
    """A `run` task cancelled before its first step never reaches its ``finally``; `stop`
    still writes what is queued and ends the thread (else a late write meets a closed file)."""
    w = FileWriter()
    gate = threading.Event()
    order: list[int] = []
    before = writer_threads()
    w.start()
    w.submit(hold(gate))
    w.submit(lambda: order.append(1))
    runner = asyncio.get_running_loop().create_task(w.run())
    runner.cancel()  # before its first step: its body never runs
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert writer_threads() - before, "the thread is still there: nobody stopped it"
    stopping = asyncio.get_running_loop().create_task(w.stop())
    await asyncio.sleep(0.02)
    assert not stopping.done(), "stop returned before the queued writes were carried out"
    gate.set()
    async with asyncio.timeout(10):
        await stopping
    assert order == [1]
    assert not writer_threads() - before
    w.submit(lambda: order.append(2))  # stopped: at once again
    assert order == [1, 2]
    await w.stop()  # idempotent


async def test_a_run_with_nothing_left_to_do_leaves_no_writer_behind(
    workspace: Path, responses: Path
) -> None:
    """A resumed run whose tasks all succeeded earlier ends before its background task's first
    step; the record of its end, made after `execute`, must land at once (the soak saw a
    resumed run exit 0 with its journal still saying ``running``)."""
    plan = Plan("test", (scripted("a", Say("x")), scripted("b", Say("y"))), workspace=workspace)
    settings = RunSettings(responses=responses, run_id="test-nothing-left", progress_interval=0.01)
    path = responses / ".run" / "journal.jsonl"
    journal = Journal(path, fresh=True)
    pool = AgentPool(plan)
    before = writer_threads()
    try:
        run = Run(plan, settings, agents=pool, journal=journal, done_tasks=["a", "b"])
        async with asyncio.timeout(10):
            await run.execute()
        assert not writer_threads() - before
        journal.record("run", state="finished")  # what the runner records next
        assert load(path).run["state"] == "finished"
    finally:
        journal.close()
        await pool.aclose()


async def test_a_record_goes_ahead_of_other_agents_writes_but_after_its_own_status_line() -> None:
    """The journal is not queued behind other agents' files: a record waits only for the
    status line (``last``) of the agent it is about, and for the records before it."""
    order: list[str] = []
    async with held_writer() as w:  # the thread is held by agent "busy"'s files
        w.submit(lambda: order.append("busy: more"), "busy")
        w.submit(lambda: order.append("a: words"), "a")
        w.submit(lambda: order.append("a: status"), "a", last=True)
        w.submit(lambda: order.append("b: create"), "b")
        w.submit(lambda: order.append("record b"), "b", record=True)
        w.submit(lambda: order.append("record a"), "a", record=True)
        w.submit(lambda: order.append("b: words"), "b")
    assert order == [
        "record b",  # b's earlier file writes are no status line: it need not wait
        "a: words",  # "record a" waits for a's status line, and so for a's writes before it
        "a: status",
        "record a",
        "busy: more",  # then what nothing waits for, oldest first
        "b: create",
        "b: words",  # after "record b": no file is written that the journal does not name
    ]


async def test_a_record_is_carried_while_other_agents_earlier_writes_are_still_held() -> None:
    """What an agent's start waits for (`carried`): its start record, and what the order puts
    before it (the status line of the agent a record is about), not the creates of agents
    started before it, which the barrier (`written`) still waits for."""
    w = FileWriter()
    first, second = threading.Event(), threading.Event()
    order: list[str] = []
    async with asyncio.TaskGroup() as tg:
        w.start()
        runner = tg.create_task(w.run())
        try:
            await holding(w, "busy", first)
            w.submit(hold(second), "b")  # another agent's create, held once the thread gets to it
            w.submit(lambda: order.append("a: status"), "a", last=True)
            w.submit(lambda: order.append("record a"), "a", record=True)
            record = w.mark()
            carried = w.carried(record)
            barrier = tg.create_task(w.written(record))
            await asyncio.sleep(0)
            assert not carried.done(), "carried before the thread took the record"
            first.set()
            async with asyncio.timeout(10):
                await carried
            assert order == ["a: status", "record a"]
            told: list[str] = []
            w.when_carried(record, lambda: told.append("late"))  # asked after: at once
            assert told == ["late"]
            await asyncio.sleep(0.02)
            assert not barrier.done(), "the barrier passed b's held create"
            second.set()
            async with asyncio.timeout(10):
                await barrier
            await w.carried(record)
        finally:
            first.set()
            second.set()
            runner.cancel()


async def test_a_write_someone_waits_for_goes_ahead_of_other_agents_file_writes() -> None:
    """An agent's start waits for its own create: the thread takes it (after its key's
    earlier writes and the journal's records) ahead of the creates of agents before it."""
    order: list[str] = []
    async with held_writer() as w:
        for name in ("b", "c"):
            w.submit(lambda name=name: order.append(f"{name}: create"), name)  # type: ignore[misc]
        w.submit(lambda: order.append("record a"), "a", record=True)
        w.submit(lambda: order.append("a: create"), "a")
        create = w.mark()
        w.submit(lambda: order.append("a: words"), "a")
        waiting = w.carried(create)
        await asyncio.sleep(0)
        assert not waiting.done()
    await waiting
    assert order == ["record a", "a: create", "b: create", "c: create", "a: words"]


async def test_a_cancelled_wait_for_one_write_leaves_the_others_told() -> None:
    """An agent cancelled while it waits for its create (the run torn down, a cancel) drops
    its future; the thread's report then skips it and still tells whoever else waits."""
    told: list[str] = []
    async with held_writer() as w:
        w.submit(lambda: None, "a")
        create = w.mark()
        gone = asyncio.get_running_loop().create_task(_await(w.carried(create)))
        kept = w.carried(create)
        w.when_carried(create, lambda: told.append("callback"))
        await asyncio.sleep(0)
        gone.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gone
        assert not kept.done()
    async with asyncio.timeout(10):
        await kept
    assert told == ["callback"]


async def _await(waiting: Awaitable[None]) -> None:
    await waiting


async def test_a_wait_for_one_write_is_answered_when_the_writer_stops() -> None:
    """Writes still queued when the thread stops are carried out by `stop`, and whoever waits
    for one of them is told."""
    w = FileWriter()
    gate = threading.Event()
    told: list[str] = []
    w.start()
    await holding(w, "busy", gate)
    w.submit(lambda: None, "a", record=True)
    w.when_carried(w.mark(), lambda: told.append("a"))
    stopping = asyncio.get_running_loop().create_task(w.stop())
    await asyncio.sleep(0)
    assert told == []
    gate.set()
    async with asyncio.timeout(10):
        await stopping
    assert told == ["a"]


async def test_records_that_may_go_together_are_written_by_the_last_ones_write() -> None:
    """A record's write writes the records before it (the journal writes through): the
    thread calls only the last of a run of records that may go, and a record held back by
    its agent's status line ends the run."""
    called: list[str] = []
    async with held_writer() as w:
        for name in ("r1", "r2", "r3"):
            w.submit(lambda name=name: called.append(name), name, record=True)  # type: ignore[misc]
        w.submit(lambda: called.append("c: status"), "c", last=True)
        w.submit(lambda: called.append("r4"), "c", record=True)
        w.submit(lambda: called.append("r5"), "e", record=True)
    assert called == ["r3", "c: status", "r5"]


async def test_a_write_without_a_key_is_a_fence() -> None:
    order: list[str] = []
    async with held_writer() as w:
        w.submit(lambda: order.append("busy: more"), "busy")
        w.submit(lambda: order.append("fence"))
        w.submit(lambda: order.append("record"), "a", record=True)
    assert order == ["busy: more", "fence", "record"]


async def test_the_journal_is_written_ahead_of_other_agents_queued_file_writes(
    tmp_path: Path,
) -> None:
    """What B10 measures: records submitted behind other agents' file writes are written
    (and so fsynced by the group commit) before them, not queued behind them."""
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, fresh=True)
    seen: list[dict[str, object]] = []
    try:
        async with held_writer("slow") as w:
            journal.submit = w.submit
            for _ in range(3):  # that agent's files, queued behind it
                w.submit(lambda: seen.append(load(path).agents.get("a", {})), "slow")
            journal.record("agent", id="a", state="running")
            journal.record("agent", id="a", state="succeeded")
        assert seen == [{"id": "a", "state": "succeeded"}] * 3
        assert journal.records == 2
    finally:
        journal.close()


def test_a_batch_the_disk_refuses_is_retried_record_by_record(tmp_path: Path) -> None:
    """Records written as one write that the disk refuses whole are tried one at a time, so
    the ones that still fit land (as they did when each had a write of its own)."""
    path = tmp_path / "journal.jsonl"
    failures: list[OSError] = []
    journal = Journal(path, fresh=True, on_failure=lambda p, exc: failures.append(exc))
    queued: list[Callable[[], None]] = []
    journal.submit = lambda write, key=None, /, *, record=False: queued.append(write)
    journal.record("agent", id="a", state="running")
    journal.record("agent", id="b", state="running", pad="x" * 5000)
    limit = len(path.read_bytes()) + 200  # room for a's record, not for b's
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        queued[-1]()  # the last record's write writes both
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    journal.close()
    state = load(path)
    assert state.agents["a"]["state"] == "running"
    assert "b" not in state.agents
    assert state.torn == 0
    assert len(failures) == 1


async def test_after_a_burst_the_thread_drops_its_tables_and_says_it_drained(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A burst leaves the thread's tables at their largest (a set never shrinks): once it has
    carried one out and has nothing left it starts them afresh and calls ``on_drained``,
    and writes after that keep their order and their waits."""
    monkeypatch.setattr(writer_module, "BURST", 40)
    drained = threading.Event()
    told: list[str] = []

    def on_drained() -> None:
        told.append(threading.current_thread().name)
        drained.set()

    order: list[str] = []
    async with held_writer() as w:
        w.on_drained = on_drained
        for i in range(30):  # records go ahead of the creates: the set of writes ahead grows
            w.submit(lambda i=i: order.append(f"{i}: create"), str(i))  # type: ignore[misc]
            w.submit(lambda i=i: order.append(f"record {i}"), str(i), record=True)  # type: ignore[misc]
        ahead = w._ahead
    async with asyncio.timeout(10):
        assert await asyncio.to_thread(drained.wait, 10)
    assert told == ["orchestrator-writer"]
    assert w._ahead is not ahead
    assert not w._ahead
    # the records went first, as one write (the last one's); then the creates, in order
    assert order == ["record 29"] + [f"{i}: create" for i in range(30)]
    drained.clear()
    after: list[str] = []
    async with held_writer() as w2:  # a fresh thread for the rest of the check
        w2.on_drained = on_drained
        w2.submit(lambda: after.append("a: create"), "a")
        create = w2.mark()
        w2.submit(lambda: after.append("b: create"), "b")
        waiting = w2.carried(create)
    async with asyncio.timeout(10):
        await waiting
    assert after == ["a: create", "b: create"]
    assert not drained.is_set()  # fewer than a burst: nothing to drop


async def test_the_same_thread_keeps_order_and_waits_across_a_drain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(writer_module, "BURST", 10)
    drained = threading.Event()
    order: list[str] = []
    w = FileWriter()
    w.on_drained = drained.set
    async with asyncio.TaskGroup() as tg:
        w.start()
        runner = tg.create_task(w.run())
        for i in range(20):
            w.submit(lambda i=i: order.append(f"{i}"), "a")  # type: ignore[misc]
        assert await asyncio.to_thread(drained.wait, 10)
        w.submit(lambda: order.append("record b"), "b", record=True)
        w.submit(lambda: order.append("b: create"), "b")
        create = w.mark()
        w.submit(lambda: order.append("b: words"), "b")
        async with asyncio.timeout(10):
            await w.carried(create)
            await w.written()
        runner.cancel()
    assert order == [f"{i}" for i in range(20)] + ["record b", "b: create", "b: words"]


async def test_an_on_drained_that_raises_ends_the_writer_with_its_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(writer_module, "BURST", 2)
    w = FileWriter()

    def broken() -> None:
        raise RuntimeError("a bug in on_drained")

    w.on_drained = broken

    async def run_broken() -> None:
        async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
            tg.create_task(w.run())
            await asyncio.sleep(0)
            for _ in range(3):
                w.submit(lambda: None, "a")
            await asyncio.sleep(30)

    with pytest.raises(ExceptionGroup) as info:
        await run_broken()
    assert info.group_contains(RuntimeError, match="a bug in on_drained")


# --- reports in batches -----------------------------------------------------------------------


Stuck = tuple[FileWriter, Callable[[], None], threading.Event]


def _counting_reports(w: FileWriter) -> list[int]:
    """Count the thread's reports of carried writes (each wakes the loop), by their size."""
    sizes: list[int] = []
    carried = w._carried

    def counted(seqs: tuple[int, ...] | list[int]) -> None:
        if seqs:  # `stop` answers whoever still waits, with an empty list when none do
            sizes.append(len(seqs))
        carried(seqs)

    w._carried = counted  # type: ignore[method-assign]
    return sizes


def _patient(monkeypatch: pytest.MonkeyPatch, **rules: float) -> None:
    """Make every rule that reports a held write at once never fire, but those given."""
    values = {"REPORT_AFTER": 10**9, "REPORT_WITHIN": 3600.0, "SLOW_WRITE": 3600.0} | rules
    for name, value in values.items():
        monkeypatch.setattr(writer_module, name, value)


async def test_in_a_burst_the_writes_someone_waits_for_are_reported_in_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A burst of 200 agents' creates, each waited for: one report per `REPORT_AFTER` of
    them and one for the rest once the thread is idle, not one each."""
    _patient(monkeypatch, REPORT_AFTER=32)
    order: list[int] = []
    async with held_writer() as w:
        sizes = _counting_reports(w)
        waits = []
        for i in range(200):
            w.submit(lambda i=i: order.append(i), f"a{i}")  # type: ignore[misc]
            waits.append(w.carried(w.mark()))
    async with asyncio.timeout(10):
        await asyncio.gather(*waits)
    assert order == list(range(200))
    assert sizes == [32] * 6 + [8]


async def test_a_wait_is_reported_at_once_when_the_next_write_is_not_waited_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing else anyone waits for comes next (an agent starting alone, another agent's
    words): its report goes before the thread takes that write."""
    _patient(monkeypatch)
    async with stuck_at_the_end() as (w, go, stuck):
        w.submit(lambda: None, "a")
        waiting = w.carried(w.mark())
        w.submit(hold(stuck), "b")  # nobody waits for it, and it does not end
        go()
        async with asyncio.timeout(10):
            await waiting


def _taking(seconds: float) -> Callable[[], None]:
    """A write that takes ``seconds`` (a slow disk), waiting off the loop."""

    def write() -> None:
        threading.Event().wait(seconds)

    return write


@pytest.mark.parametrize(
    ("rules", "slow"),
    [({"SLOW_WRITE": 100e-6}, 0.002), ({"REPORT_WITHIN": 0.001}, 0.005)],
    ids=["writes-are-slow", "the-first-waited-long-enough"],
)
async def test_a_held_report_does_not_wait_for_a_write_that_may_take_long(
    monkeypatch: pytest.MonkeyPatch, rules: dict[str, float], slow: float
) -> None:
    """Three creates in a row, each waited for, the third one stuck: on a disk whose writes
    are slow, or once the first waited `REPORT_WITHIN`, the first two are told before the
    third begins, not held back by it."""
    _patient(monkeypatch, **rules)
    async with stuck_at_the_end() as (w, go, stuck):
        w.submit(_taking(slow), "a")
        first = w.carried(w.mark())
        w.submit(_taking(slow), "b")
        second = w.carried(w.mark())
        w.submit(hold(stuck), "c")
        third = w.carried(w.mark())
        go()
        async with asyncio.timeout(10):
            await asyncio.gather(first, second)
        assert not third.done()


@contextlib.asynccontextmanager
async def stuck_at_the_end() -> AsyncIterator[Stuck]:
    """A running writer whose thread is held until the block calls ``go``, and a gate for a
    write that stays stuck until the block ends."""
    w = FileWriter()
    busy, stuck = threading.Event(), threading.Event()
    async with asyncio.TaskGroup() as tg:
        w.start()
        runner = tg.create_task(w.run())
        try:
            await holding(w, "busy", busy)
            yield w, busy.set, stuck
        finally:
            busy.set()
            stuck.set()
            runner.cancel()
