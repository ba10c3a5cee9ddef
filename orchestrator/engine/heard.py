"""What an agent's attempt tells its run (`attempt.Host`, through `attempt.Hooks`): its
events, its program's output lines, its processes. `Run` inherits these; each is recorded
(masked, buffered for its progress files) before anyone is told."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from orchestrator.events import AgentEvent, BuildChecked, Output, Usage
from orchestrator.process import procfs
from orchestrator.process.lines import Stream

if TYPE_CHECKING:
    from orchestrator.engine.governor import Governor
    from orchestrator.engine.recorder import Recorder
    from orchestrator.engine.repairs import Repairs
    from orchestrator.engine.state import AgentRecord


class AgentCalls:
    """An attempt's callbacks, as the run answers them."""

    recorder: Recorder
    governor: Governor
    repairs: Repairs
    _on_event: Callable[[AgentRecord, str, AgentEvent | None], None] | None

    def agent_event(self, rec: AgentRecord, event: AgentEvent) -> None:
        """What an agent emitted (`attempt.Hooks.emit`)."""
        event, line = self.recorder.event(rec, event)
        rec.heard(event, line, time.monotonic())
        match event:
            case Usage() if self.governor.budget_spent:  # charged by the gateway or the agent
                self._budget_gone()
            case BuildChecked():
                self.repairs.record_build(rec.id, event)
        if self._on_event is not None:
            self._on_event(rec, line, event)

    def agent_output(self, rec: AgentRecord, stream: Stream, lines: Sequence[str]) -> None:
        """Lines its program printed (`attempt.Hooks.output`): what `agent_event` does for
        one `Output` each, in one pass."""
        if lines:
            shown = self.recorder.output(rec, stream, lines)
            rec.heard_lines(shown, time.monotonic())
            if self._on_event is not None:
                self._on_event(rec, shown[-1], Output(lines[-1], stream))

    def agent_process(self, rec: AgentRecord, pid: int) -> None:
        """A process an agent started (`attempt.Hooks.on_process`)."""
        rec.pid = pid
        rec.pstart = procfs.process_start_time(pid)
        self.recorder.process(rec)

    # --- what the scheduler provides --------------------------------------------------------

    def _budget_gone(self) -> None:
        raise NotImplementedError  # pragma: no cover - `Run` has it
