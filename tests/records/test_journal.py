"""The journal: appends fold into state; torn lines never stop it loading."""

from __future__ import annotations

import os
from pathlib import Path

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
