"""Progress files: whole lines, safe names, no symlinks, a size cap, a final status line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from orchestrator.events import Blocked, Output, Started, Text, ToolCall, Usage
from orchestrator.records.progress import ProgressWriter, clean, safe_path

STAMP = re.compile(r"\[\+\s*\d+\.\d\ds\] ")


def body(path: Path) -> str:
    return STAMP.sub("", path.read_text())


def test_events_render_as_lines_and_sidecar_records(tmp_path: Path) -> None:
    w = ProgressWriter(tmp_path)
    w.open("a1", "# a1\n\n")
    w.append("a1", Started("scripted (2 steps)"))
    w.append("a1", Text("hello "))
    w.append("a1", Text("world\nsecond"))
    w.append("a1", ToolCall("write", "x.py (3 chars)"))
    w.append("a1", Output("out line"))
    w.append("a1", Output("err line", "stderr"))
    w.append("a1", Usage(10, 20, 0.5))
    w.append("a1", Blocked("need schema"))
    w.finish("a1", "blocked (0.01s)", {"event": "status", "state": "blocked"})
    assert body(tmp_path / "a1.md") == (
        "# a1\n\n"
        "started: scripted (2 steps)\n"
        "hello world\n"
        "second\n"
        "-> write: x.py (3 chars)\n"
        "| out line\n"
        "! err line\n"
        "usage: 10 in / 20 out tokens, $0.5000\n"
        "BLOCKED: need schema\n"
        "\nstatus: blocked (0.01s)\n"
    )
    records = [json.loads(x) for x in (tmp_path / "a1.events.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records] == [
        "started", "text", "text", "toolcall", "output", "output", "usage", "blocked", "status",
    ]  # fmt: skip


def test_a_usage_report_never_breaks_a_line_the_agent_is_still_writing(tmp_path: Path) -> None:
    w = ProgressWriter(tmp_path)
    w.open("a1", "# a1\n\n")
    w.append("a1", Text("Let me look at t"))
    w.append("a1", Usage(10, 20, 0.5))  # the gateway's report, from its own thread
    w.append("a1", Text("he code first.\n"))
    w.finish("a1", "succeeded", {"event": "status", "state": "succeeded"})
    assert body(tmp_path / "a1.md") == (
        "# a1\n\nusage: 10 in / 20 out tokens, $0.5000\nLet me look at the code first.\n"
        "\nstatus: succeeded\n"
    )


def test_nothing_is_written_before_a_flush_and_everything_after(tmp_path: Path) -> None:
    w = ProgressWriter(tmp_path)
    w.open("a", "")
    w.append("a", Text("line\n"))
    assert body(tmp_path / "a.md") == ""
    w.flush("a")
    assert body(tmp_path / "a.md") == "line\n"


def test_escape_sequences_and_control_bytes_are_removed(tmp_path: Path) -> None:
    assert clean("\x1b[31mred\x1b[0m\x07 \x00bell\ttab") == "red bell\ttab"
    w = ProgressWriter(tmp_path)
    w.open("a", "")
    w.append("a", Output("\x1b]0;pwned\x07\x1b[2Jok\udcff"))
    w.finish("a", "succeeded", {})
    text = (tmp_path / "a.md").read_bytes().decode("utf-8")
    assert "\x1b" not in text
    assert "ok" in text


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", "", "..", ".hidden", "a" * 300, "x\n"])
def test_unsafe_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="unsafe"):
        safe_path(tmp_path, name)


def test_a_symlink_in_place_of_the_file_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("canary")
    responses = tmp_path / "responses"
    responses.mkdir()
    (responses / "a.md").symlink_to(outside)
    w = ProgressWriter(responses)
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        w.open("a", "header")
    assert outside.read_text() == "canary"


def test_size_cap_truncates_with_a_marker_and_keeps_the_status_line(tmp_path: Path) -> None:
    w = ProgressWriter(tmp_path, cap=4096)
    w.open("a", "# a\n")
    for i in range(2000):
        w.append("a", Output(f"line {i} " + "x" * 50))
        if i % 100 == 0:
            w.flush("a")
    w.finish("a", "succeeded (1s)", {"event": "status"})
    data = (tmp_path / "a.md").read_text()
    assert "truncated" in data
    assert data.count("truncated: a.md") == 1
    assert data.rstrip("\n").splitlines()[-1] == "status: succeeded (1s)"
    assert len(data) < 4096 + 1024
    assert (tmp_path / "a.events.jsonl").stat().st_size < 4096 + 1024


async def test_flusher_writes_within_its_interval(tmp_path: Path) -> None:
    import asyncio

    w = ProgressWriter(tmp_path, interval=0.01)
    w.open("a", "")
    task = asyncio.create_task(w.run_flusher())
    try:
        w.append("a", Text("live\n"))
        for _ in range(200):
            if "live" in (tmp_path / "a.md").read_text():
                break
            await asyncio.sleep(0.01)
        assert body(tmp_path / "a.md") == "live\n"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
