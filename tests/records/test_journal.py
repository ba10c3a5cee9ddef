"""The journal: appends fold into state; torn lines never stop it loading."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.records.journal import Journal, JournalReader, load


def test_records_fold_by_id(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.jsonl", fresh=True)
    j.record("run", plan="p", state="running")
    j.record("agent", id="a", state="running", pid=12)
    j.record("agent", id="a", state="succeeded")
    j.record("task", id="a", state="succeeded")
    j.record("run", state="finished")
    j.close()
    state = load(tmp_path / "j.jsonl")
    assert state.run == {"plan": "p", "state": "finished"}
    assert state.agents["a"] == {"id": "a", "state": "succeeded", "pid": 12}
    assert state.tasks["a"]["state"] == "succeeded"


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    j = Journal(path, fresh=True)
    j.record("agent", id="a", state="running")
    j.close()
    with open(path, "ab") as fh:
        fh.write(b'{"k": "agent", "id": "a", "sta')
    state = load(path)
    assert state.agents["a"]["state"] == "running"
    assert state.torn == 1


def test_garbage_lines_are_counted_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_bytes(b'\xff\xfe\n[1,2]\n{"k":"task","id":"t","state":"failed"}\n')
    state = load(path)
    assert state.tasks["t"]["state"] == "failed"
    assert state.torn == 2


def test_reader_reads_only_what_was_appended(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    j = Journal(path, fresh=True)
    reader = JournalReader(path)
    j.record("agent", id="a", state="running")
    assert reader.poll()
    assert not reader.poll()
    j.record("agent", id="a", state="failed")
    assert reader.poll()
    assert reader.state.agents["a"]["state"] == "failed"
    j.close()


def test_resume_appends_and_fresh_truncates(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    Journal(path, fresh=True).record("task", id="a", state="succeeded")
    resumed = Journal(path, fresh=False)
    resumed.record("task", id="b", state="succeeded")
    resumed.close()
    assert set(load(path).tasks) == {"a", "b"}
    Journal(path, fresh=True).close()
    assert load(path).tasks == {}
    assert os.path.getsize(path) == 0


def test_a_torn_last_line_is_absent_even_when_it_parses(tmp_path: Path) -> None:
    """A record without its newline was cut by a crash: readers never act on it."""
    path = tmp_path / "j.jsonl"
    path.write_bytes(b'{"k": "agent", "id": "a", "state": "running"}\n{"k": "agent", "id": "a"')
    assert load(path).agents["a"]["state"] == "running"
    path.write_bytes(b'{"k": "agent", "id": "a", "state": "running"}\n'
                     b'{"k": "agent", "id": "a", "state": "failed"}')  # fmt: skip
    state = load(path)
    assert state.agents["a"]["state"] == "running"
    assert state.torn == 1


def test_a_journal_continued_after_a_torn_line_starts_on_a_line_of_its_own(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.jsonl"
    path.write_bytes(b'{"k": "run", "state": "running"}\n{"k": "agent", "id": "a", "sta')
    resumed = Journal(path, fresh=False)
    resumed.record("agent", id="a", state="lost")
    resumed.record("run", state="finished")
    resumed.close()
    state = load(path)
    assert state.agents["a"]["state"] == "lost"
    assert state.run["state"] == "finished"
    assert state.torn == 1  # the torn line stays torn; nothing glued to it
    assert path.read_bytes().count(b"\n") == 4


def test_a_write_the_disk_refuses_is_reported_and_leaves_whole_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from orchestrator.records import rundir

    path = tmp_path / "j.jsonl"
    failures: list[tuple[str, int | None]] = []
    j = Journal(path, fresh=True, on_failure=lambda p, exc: failures.append((p, exc.errno)))
    j.record("run", state="running")
    real = os.write

    def half_then_enospc(fd: int, data: bytes | memoryview) -> int:
        if len(data) > 8:
            return real(fd, bytes(data[:8]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rundir.os, "write", half_then_enospc)
    j.record("agent", id="a", state="running")
    monkeypatch.setattr(rundir.os, "write", real)
    j.record("run", state="interrupted")
    j.close()
    assert failures == [(str(path), errno.ENOSPC)]
    assert path.read_bytes().count(b"\n") == 2
    state = load(path)
    assert (state.torn, state.run["state"], state.agents) == (0, "interrupted", {})


def test_space_is_kept_in_reserve_for_the_last_records(tmp_path: Path) -> None:
    from orchestrator.records.journal import RESERVE

    path = tmp_path / "j.jsonl"
    j = Journal(path, fresh=True)
    j.record("run", state="running")
    allocated = os.stat(path).st_blocks * 512
    j.close()
    if allocated < 4096:
        pytest.skip("this file system does not keep space past a file's end")
    assert allocated >= RESERVE
    assert os.path.getsize(path) < 200
