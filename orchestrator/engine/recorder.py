"""Where a run's transitions are written, in order: progress files first, then the journal.

The scheduler decides; the recorder writes. For every transition the agent's words reach its
progress file (buffered, flushed by `run_background`) before the journal records the change;
the run's writer thread carries out each agent's writes in that order (its records go ahead
of other agents' file writes: `orchestrator.records.writer`), and the scheduler tells
anyone (`when_written`, `written`) only after the thread has carried out everything
submitted before, and starts an agent's process once its progress files are created, after
the journal's record of its start and the records before it (`start_written`). Secrets are
masked here, once, in every event whatever the agent's kind.

A write that fails once the run has started (a full disk, a file-size limit) never raises into
the scheduler: the writers take it back to whole lines, and the recorder keeps the first
failure in `failure` and tells ``on_failure`` once, on a later turn of the loop, so the run
stops the way a signal would stop it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence

from orchestrator.engine.collecting import trim_heap
from orchestrator.engine.state import LAST_LINES, AgentRecord, RunSettings, TaskRecord
from orchestrator.events import AgentEvent
from orchestrator.process.lines import Stream
from orchestrator.process.secrets import scrub_event, scrub_text
from orchestrator.records.journal import Journal
from orchestrator.records.progress import ProgressWriter
from orchestrator.records.render import brief
from orchestrator.records.writer import FileWriter

LIVE_INTERVAL = 0.25
"""How often running agents' last line and spend are journaled (for `status` elsewhere)."""


class Recorder:
    """The progress writer and the journal of one run, and what goes into them."""

    def __init__(
        self,
        settings: RunSettings,
        journal: Journal | None,
        *,
        secrets: tuple[str, ...],
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.progress = ProgressWriter(
            settings.responses,
            cap=settings.progress_cap,
            interval=settings.progress_interval,
            on_failure=self._failed,
        )
        self.journal = journal
        self.writer = FileWriter()
        self.writer.on_drained = trim_heap
        self.progress.submit = self.writer.submit
        if journal is not None:
            journal.submit = self.writer.submit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._secrets = secrets
        self._live_dirty: dict[str, AgentRecord] = {}
        self._on_failure = on_failure
        self.failure: str | None = None
        """The first write that failed while the run went on: "cannot write PATH: why"."""

    def _failed(self, path: str, exc: OSError) -> None:
        """Told by the writers, on the writer or syncer thread or on the loop."""
        with self._lock:
            if self.failure is not None:
                return
            self.failure = f"cannot write {path}: {exc.strerror or exc}"
        if self._on_failure is not None:
            loop = self._loop or asyncio.get_running_loop()
            loop.call_soon_threadsafe(self._on_failure, self.failure)

    def when_written(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once everything recorded so far is in its file."""
        self.writer.when_written(callback)

    async def written(self) -> None:
        """Return once everything recorded so far is in its file."""
        await self.writer.written()

    def start_written(self, mark: int) -> Awaitable[None]:
        """Done once the agent `agent_started` returned ``mark`` for has its progress files
        and its start record is in the journal (and the records before it), not behind other
        agents' file writes (`FileWriter.carried`: a future, the one object a waiting agent
        holds for it)."""
        return self.writer.carried(mark)

    async def run_background(self) -> None:
        """Write files on the writer thread, flush progress files, sync the journal and
        journal live agents until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.writer.run())
            tg.create_task(self.progress.run_flusher())
            if self.journal is not None:
                tg.create_task(self.journal.run_syncer())
                tg.create_task(self._journal_live())

    async def close(self) -> None:
        """Every buffered line handed over and carried out, the writer thread gone: after
        `run_background` or in its place (a run with nothing left to do ends before that
        task's first step, so its own ``finally`` never runs)."""
        self.progress.flush_all()
        await self.writer.stop()

    # --- the run ---------------------------------------------------------------------------

    def run_started(self, started: float) -> None:
        """From here on a failed write stops the run instead of raising (see the module)."""
        self._loop = asyncio.get_running_loop()
        self.writer.start()  # now, not when the background task first runs
        if self.journal is not None:
            self.journal.on_failure = self._failed
            self.journal.record("run", state="running", started=started)

    def fence(self, reason: str, **extra: object) -> None:
        if self.journal is not None:
            self.journal.record("run", fence=reason, **extra)

    def denied(self, agent_id: str, limit: str, reason: str) -> None:
        if self.journal is not None:
            self.journal.record("denial", agent=agent_id, limit=limit, reason=reason)

    # --- agents ----------------------------------------------------------------------------

    def agent_started(self, rec: AgentRecord, header: str) -> int:
        """The journal first: no progress file exists that the journal does not name.

        Returns the mark of its progress files' create, made right after the record and
        before anything it says: the agent may act once that is carried out
        (`start_written`), and so its start record too."""
        if self.journal is not None:
            self.journal.record("agent", **rec.started_fields())
        self.progress.open(rec.id, header)
        return self.writer.mark()

    def event(self, rec: AgentRecord, event: AgentEvent) -> tuple[AgentEvent, str]:
        """Mask secrets in ``event`` and buffer it; the event as written and its shown line."""
        if self._secrets:
            event = scrub_event(event, self._secrets)
        self._live_dirty[rec.id] = rec
        return event, self.progress.append(rec.id, event)

    def output(self, rec: AgentRecord, stream: Stream, lines: Sequence[str]) -> list[str]:
        """Lines its program printed, masked and buffered as `event` would one `Output` each;
        the last `LAST_LINES` of them as shown."""
        if self._secrets:
            lines = [scrub_text(line, self._secrets) for line in lines]
        self._live_dirty[rec.id] = rec
        return self.progress.output(rec.id, stream, lines, keep=LAST_LINES)

    def process(self, rec: AgentRecord) -> None:
        if self.journal is not None:
            self.journal.record("agent", id=rec.id, pid=rec.pid, pgid=rec.pid, pstart=rec.pstart)

    def stopping(self, rec: AgentRecord, reason: str, grace: float) -> str:
        """The agent is being stopped (its processes have ``grace`` s after SIGTERM); the line
        that says so, also in its progress file."""
        how = f"SIGTERM, SIGKILL after {grace:g}s" if grace > 0 else "SIGKILL"
        line = f"stopping: {reason} ({how})"
        self.progress.note(rec.id, line)
        if self.journal is not None:
            self.journal.record("agent", id=rec.id, stopping=reason)
        return line

    def agent_ended(self, rec: AgentRecord, notes: list[str]) -> None:
        """The orchestrator's own ``notes`` (what happens next), the status line, the journal."""
        for line in (*rec.changes, *notes):
            self.progress.note(rec.id, line)
        self.progress.finish(rec.id, rec.status_line(), rec.status_record())
        if self.journal is not None:
            self.journal.record("agent", **rec.ended_fields())

    # --- tasks -----------------------------------------------------------------------------

    def task_settled(self, trec: TaskRecord) -> None:
        """A task has its final state; one that never ran still gets a progress file."""
        tid = trec.task.id
        if not trec.attempts and trec.state != "pending":
            self.progress.open(tid, f"# {tid}\n\n- task: {tid}\n- never started\n\n")
            status = f"{trec.state} - {brief(trec.reason)}"
            self.progress.finish(tid, status, {"event": "status", "state": trec.state})
        if self.journal is not None:
            self.journal.record("task", id=tid, state=trec.state, reason=trec.reason)

    def task_added(self, trec: TaskRecord) -> None:
        """A task added at run time: journaled with what was asked, so `--resume` rebuilds it
        the same way (`orchestrator.records.resume.added_tasks`), and a note in its adder's
        progress file."""
        task = trec.task
        if self.journal is not None:
            asked = {"id": task.id, "prompt": task.prompt, "kind": task.agent,
                     "depends_on": list(task.depends_on)}  # fmt: skip
            self.journal.record("task", id=task.id, state="pending", added=trec.added,
                                added_by=trec.added_by, depth=trec.depth, request=asked,
                                depends_on=list(task.depends_on))  # fmt: skip
        if trec.added_by is not None:
            self.progress.note(trec.added_by, f"added task: {task.id} ({task.id}.md)")

    def add_refused(self, agent_id: str, line: str) -> None:
        """An addition this agent asked for was refused: said in its progress file."""
        self.progress.note(agent_id, f"add refused: {line}")

    async def _journal_live(self) -> None:
        assert self.journal is not None
        while True:
            await asyncio.sleep(LIVE_INTERVAL)
            dirty, self._live_dirty = self._live_dirty, {}
            for rec in dirty.values():
                if rec.state == "running":
                    self.journal.record("agent", **rec.live_fields())
