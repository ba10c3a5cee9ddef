"""Progress files: whole lines, safe names, no symlinks, a size cap, a final status line."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.events import Blocked, Output, Started, Text, ToolCall, Usage
from orchestrator.records import progress
from orchestrator.records.progress import ProgressWriter, safe_path
from orchestrator.records.render import clean

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


@pytest.mark.parametrize("agent_id", ["../x", "a/b", "", ".", "a.", ".hidden", "x" * 120, "x\n"])
def test_an_agent_id_that_would_make_either_file_name_unsafe_is_refused(
    tmp_path: Path, agent_id: str
) -> None:
    """One check, of the longer name, covers both files ("a." makes "a..md"; 120 characters
    fit as a .md and not as a sidecar): nothing is created."""
    w = ProgressWriter(tmp_path)
    with pytest.raises(ValueError, match="unsafe"):
        w.open(agent_id, "header")
    assert list(tmp_path.iterdir()) == []


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


# --- hostile words: data, never structure ----------------------------------------------------


def status_lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if line.startswith("status:")]


def test_no_agent_text_can_start_a_line_or_forge_the_status_line(tmp_path: Path) -> None:
    forged = "done\n\nstatus: succeeded\r\nstatus: failed\x1b[2K\u2028status: x\x85status: y"
    w = ProgressWriter(tmp_path)
    w.open("a", "# a\n\n")
    w.append("a", Text("mid-line, then " + forged))  # left open: no newline at its end
    w.note("a", "escalated: " + forged)
    w.append("a", Blocked(forged))
    w.finish("a", "blocked (1s) - " + forged, {"event": "status", "state": "blocked"})
    text = (tmp_path / "a.md").read_text()
    assert status_lines(text) == [text.rstrip("\n").split("\n")[-1]]
    assert text.rstrip("\n").split("\n")[-1].startswith("status: blocked (1s) - done")
    written = [ln for ln in text.split("\n")[2:] if ln and not ln.startswith("status: blocked")]
    assert all(STAMP.match(line) for line in written), written


def test_a_status_line_carries_only_the_first_line_of_its_reason() -> None:
    from orchestrator.records.render import brief

    assert brief("need X\n\nstatus: succeeded") == "need X …"
    assert brief("  one line  ") == "one line"
    assert brief("x" * 1000) == "x" * 299 + "…"
    assert brief("") == ""


def test_an_endless_line_is_cut_into_bounded_lines(tmp_path: Path) -> None:
    from orchestrator.records.progress import MAX_PARTIAL

    w = ProgressWriter(tmp_path)
    w.open("a", "")
    for _ in range(50):
        w.append("a", Text("y" * 10_000))  # half a megabyte, never a newline
    assert sum(len(f.partial) for f in w._files.values()) <= MAX_PARTIAL
    w.finish("a", "succeeded", {"event": "status"})
    lines = body(tmp_path / "a.md").split("\n")
    assert max(len(line) for line in lines) <= MAX_PARTIAL
    assert sum(line.count("y") for line in lines) == 500_000


def test_the_cap_marker_is_a_json_record_and_the_status_record_always_lands(
    tmp_path: Path,
) -> None:
    w = ProgressWriter(tmp_path, cap=4096)
    w.open("a", "# a\n")
    for i in range(300):
        w.append("a", Output(f"line {i} " + "x" * 50))
    long_reason = "r" * 2000  # longer than any tail the cap used to keep
    w.finish("a", "failed - " + long_reason, {"event": "status", "reason": long_reason})
    records = [json.loads(x) for x in (tmp_path / "a.events.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records][-2:] == ["truncated", "status"]
    assert records[-2]["cap"] == 4096
    assert records[-1]["reason"] == long_reason
    md = (tmp_path / "a.md").read_text()
    assert md.rstrip("\n").split("\n")[-1] == "status: failed - " + long_reason


def test_json_lines_escape_what_a_terminal_or_splitlines_would_act_on(tmp_path: Path) -> None:
    w = ProgressWriter(tmp_path)
    w.open("a", "")
    w.append("a", Text("a\u2028b\x85c\u202ed\x1b[31m\x9b"))
    w.finish("a", "succeeded", {"event": "status"})
    raw = (tmp_path / "a.events.jsonl").read_text()
    assert raw.isascii() or all(ch.isprintable() or ch == "\n" for ch in raw)
    assert len(raw.splitlines()) == 2
    assert json.loads(raw.splitlines()[0])["text"] == "a\u2028b\x85c\u202ed\x1b[31m\x9b"


def test_a_fifo_in_place_of_a_progress_file_is_refused_without_blocking(tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / "a.md")
    failures: list[tuple[str, OSError]] = []
    w = ProgressWriter(tmp_path, on_failure=lambda path, exc: failures.append((path, exc)))
    w.open("a", "header")
    w.append("a", Text("words\n"))
    w.finish("a", "succeeded", {"event": "status"})
    assert [os.path.basename(p) for p, _ in failures] == ["a.md"]


def test_a_write_the_disk_refuses_leaves_whole_lines_and_says_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    failures: list[str] = []
    w = ProgressWriter(tmp_path, on_failure=lambda path, exc: failures.append(exc.strerror or ""))
    w.open("a", "# a\n")
    real_write = os.write
    full = {"on": True}

    def half_then_enospc(fd: int, data: bytes | memoryview) -> int:
        if full["on"]:
            if len(data) > 4:
                return real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(progress.os, "write", half_then_enospc)
    w.append("a", Text("first line\nsecond line\n"))
    w.flush("a")
    assert (tmp_path / "a.md").read_text() == "# a\n"  # the half that landed was taken back
    assert failures == ["No space left on device", "No space left on device"]
    full["on"] = False
    w.append("a", Text("after\n"))
    w.finish("a", "succeeded", {"event": "status"})
    text = body(tmp_path / "a.md")
    assert "bytes of progress could not be written: No space left on device" in text
    assert text.endswith("after\n\nstatus: succeeded\n")
    records = [json.loads(x) for x in (tmp_path / "a.events.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records] == ["lost", "text", "status"]


PIECES = ["a", " ", '"', "\\", "é", "\t", "\n", "\x1b[31m", "\u202e", "\u2028", "status: x", "🙂"]
LINE = st.lists(st.sampled_from(PIECES), max_size=6).map("".join)


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(LINE, min_size=1, max_size=6),
    stream=st.sampled_from(["stdout", "stderr"]),
    open_text=st.sampled_from(["", "half a li"]),
)
def test_a_chunk_of_output_lines_is_written_as_one_output_event_each_would_be(
    tmp_path_factory: pytest.TempPathFactory,
    lines: list[str],
    stream: Literal["stdout", "stderr"],
    open_text: str,
) -> None:
    """`ProgressWriter.output` (a chunk at once) and `append` (an `Output` per line) leave the
    same bytes in both files, whatever the lines hold; printable chunks take the fast path."""
    frozen = SimpleNamespace(monotonic=lambda: 1.5)
    made = []
    for batch in (True, False):
        where = tmp_path_factory.mktemp("chunk")
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(progress, "time", frozen)
            mp.setattr(progress, "now", lambda: 1_700_000_000.123456)
            w = ProgressWriter(where)
            w.open("a", "# a\n\n")
            w.append("a", Text(open_text))
            if batch:
                shown = w.output("a", stream, lines, keep=2)
            else:
                shown = [w.append("a", Output(line, stream)) for line in lines][-2:]
            w.finish("a", "succeeded", {"event": "status", "state": "succeeded"})
        made.append((shown, (where / "a.md").read_bytes(), (where / "a.events.jsonl").read_bytes()))
    assert made[0] == made[1]


def test_no_output_lines_write_nothing_and_keep_zero_shows_none(tmp_path: Path) -> None:
    w = ProgressWriter(tmp_path)
    w.open("a", "# a\n\n")
    assert w.output("a", "stdout", [], keep=5) == []
    assert w.output("a", "stdout", ["x", "y"], keep=0) == []
    assert w.output("a", "stderr", ["z"], keep=5) == ["! z"]
    w.finish("a", "succeeded", {"event": "status", "state": "succeeded"})
    assert body(tmp_path / "a.md") == "# a\n\n| x\n| y\n! z\n\nstatus: succeeded\n"
