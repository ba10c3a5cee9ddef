"""What an idle agent holds (issue 18, B4: <= 4 KiB per sleeping agent beyond a bare task).

Structural checks, not a memory threshold: the records have no instance dict, the last lines
are a short list, an attempt's child environment is built only when something reads it, its
callbacks are methods of one small object, and idle progress files and records hold no empty
containers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.engine import attempt
from orchestrator.engine.governor import Governor
from orchestrator.engine.state import LAST_LINES, AgentRecord, RunSettings, Spawn, TaskRecord
from orchestrator.events import AgentEvent, Output, Started, Text
from orchestrator.plan.model import Limits, Sleep, Task
from orchestrator.process.env import child_env
from orchestrator.process.lines import Stream
from orchestrator.records.progress import ProgressWriter


class Counted(Mapping[str, str]):
    """A mapping that counts how often it is read."""

    def __init__(self, data: Mapping[str, str]) -> None:
        self.data, self.reads = dict(data), 0

    def __getitem__(self, key: str) -> str:
        self.reads += 1
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        self.reads += 1
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __contains__(self, key: object) -> bool:
        self.reads += 1
        return key in self.data


def test_records_have_no_instance_dict() -> None:
    rec = AgentRecord("a", "a", "scripted", "task", 1, 0, None)
    assert not hasattr(rec, "__dict__")
    assert not hasattr(TaskRecord(Task("a", agent="scripted")), "__dict__")


def test_an_agent_keeps_its_last_lines_oldest_dropped() -> None:
    rec = AgentRecord("a", "a", "scripted", "task", 1, 0, None)
    assert rec.lines == []
    for i in range(LAST_LINES + 5):
        rec.heard(Text(f"line {i}\n"), f"line {i}", float(i))
    assert rec.lines == [f"line {i}" for i in range(5, LAST_LINES + 5)]
    assert rec.last_line == f"line {LAST_LINES + 4}"
    assert rec.last_event == LAST_LINES + 4


def test_lines_heard_in_chunks_keep_what_lines_heard_one_by_one_keep() -> None:
    one, many = (AgentRecord("a", "a", "command", "task", 1, 0, None) for _ in range(2))
    chunks = [[f"| {i}" for i in range(n, n + size)] for n, size in ((0, 3), (3, 30), (33, 1))]
    for chunk in chunks:
        many.heard_lines(chunk, 7.0)
        for line in chunk:
            one.heard(Output(line[2:]), line, 7.0)
    assert many.lines == one.lines == [f"| {i}" for i in range(34 - LAST_LINES, 34)]
    assert (many.last_line, many.last_event) == (one.last_line, one.last_event) == ("| 33", 7.0)


def test_an_attempt_builds_its_child_environment_only_when_read(tmp_path: Path) -> None:
    task = Task(
        "t", agent="scripted", script=(Sleep(1.0),), env=(("PLAN_VAR", "1"),), pass_env=("XTRA",)
    )
    spawn = Spawn("t", task, 1, "task", "", task.script, depth=0)
    rec = AgentRecord.of(spawn)
    source = Counted({**os.environ, "XTRA": "x", "ANTHROPIC_API_KEY": "sk-secret"})
    settings = RunSettings(responses=tmp_path, run_id="r1", exports={"ORCHESTRATOR_QUOTA": "/s"})
    limits = Limits()
    ctx = attempt.context(
        rec, spawn, workspace=tmp_path, settings=settings, env=source, limits=limits,
        emit=lambda event: None, on_process=lambda pid: None, budget=Governor(limits),
    )  # fmt: skip
    assert source.reads == 0, "an idle agent holds no copy of the environment"
    built = dict(ctx.env)
    assert built == child_env(
        agent_id="t", run_id="r1", depth=1, extra={"PLAN_VAR": "1"}, pass_env=("XTRA",),
        source=source.data,
        run_vars={"ORCHESTRATOR_MAX_DEPTH": str(limits.max_depth), "ORCHESTRATOR_QUOTA": "/s"},
    )  # fmt: skip
    assert (built["PLAN_VAR"], built["XTRA"], built["ORCHESTRATOR_DEPTH"]) == ("1", "x", "1")
    assert "ANTHROPIC_API_KEY" not in built
    reads = source.reads
    assert dict(ctx.env) == built
    assert source.reads == reads, "built once, then kept"
    # the agent's other callbacks do not hold a closure each: the stall clock is the record's
    rec.last_event = 0.0
    ctx.on_activity()
    assert rec.last_event > 0.0


def test_an_idle_progress_file_holds_no_buffers_or_paths(tmp_path: Path) -> None:
    writer = ProgressWriter(tmp_path)
    writer.open("a", "# a\n")
    writer.append("a", Started(detail="scripted (1 steps)"))
    writer.flush_all()
    (idle,) = writer._files.values()
    assert (idle.md_buf, idle.js_buf, idle.lost) == (None, None, None)
    assert not hasattr(idle, "__dict__")
    assert idle.md == str(tmp_path / "a.md")
    assert "started: scripted (1 steps)" in (tmp_path / "a.md").read_text()


def test_an_attempts_callbacks_share_one_small_object() -> None:
    seen: list[tuple[str, object]] = []

    class Host:
        def agent_event(self, rec: AgentRecord, event: AgentEvent) -> None:
            seen.append((rec.id, event))

        def agent_output(self, rec: AgentRecord, stream: Stream, lines: Sequence[str]) -> None:
            seen.append((rec.id, (stream, *lines)))

        def agent_process(self, rec: AgentRecord, pid: int) -> None:
            seen.append((rec.id, pid))

        def agent_adds(self, rec: AgentRecord, request: Mapping[str, object]) -> dict[str, Any]:
            seen.append((rec.id, request))
            return {"ok": True}

    rec = AgentRecord("a", "a", "scripted", "task", 1, 0, None)
    hooks = attempt.Hooks(Host(), rec)
    assert not hasattr(hooks, "__dict__")
    hooks.emit(Text("hi\n"))
    hooks.output("stderr", ["x", "y"])
    hooks.on_process(42)
    assert hooks.add_task({"id": "b"}) == {"ok": True}
    assert seen == [
        ("a", Text("hi\n")), ("a", ("stderr", "x", "y")), ("a", 42), ("a", {"id": "b"})
    ]  # fmt: skip


def test_a_record_makes_its_children_list_at_the_first_child() -> None:
    rec = AgentRecord("a", "a", "scripted", "task", 1, 0, None)
    trec = TaskRecord(Task("a", agent="scripted"))
    assert (rec.children, rec.changes, trec.fixers) == ((), (), ())
    rec.child("b")
    rec.child("c")
    trec.fixer("fix-a-1")
    assert (rec.children, trec.fixers) == (["b", "c"], ["fix-a-1"])
