"""Records as JSON lines: the fast encoder, and the standard library's for what it refuses."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator.records.jsonl import json_bytes, json_line, json_string, now


@dataclass
class Thing:
    name: str


def test_a_plain_record_is_one_compact_line() -> None:
    record = {"k": "agent", "id": "a", "parent": None, "attempt": 1, "t": 1.5, "ok": True}
    line = '{"k":"agent","id":"a","parent":null,"attempt":1,"t":1.5,"ok":true}\n'
    assert json_line(record) == line
    assert json_bytes(record) == json_line(record).encode()


@pytest.mark.parametrize(
    "record",
    [
        {"text": "lone \ud800 surrogate"},  # the fast encoder refuses it
        {"n": 2**70},  # past 64 bits: the fast encoder refuses it
        {"text": "plain", "n": 2**70, "nested": {"x": [1, "\u2028"]}},
    ],
)
def test_what_the_fast_encoder_refuses_is_still_written_the_same_way(record: dict) -> None:
    line = json_line(record)
    assert line.endswith("\n")
    assert line.count("\n") == 1
    assert ", " not in line
    assert ": " not in line  # the same separators as the fast encoder's
    data = json_bytes(record)
    decoded = json.loads(data)
    assert decoded.keys() == record.keys()
    if "n" in record:
        assert decoded["n"] == 2**70


def test_a_lone_surrogate_becomes_a_replacement_in_the_bytes() -> None:
    data = json_bytes({"text": "a\ud800b"})
    data.decode("utf-8")  # valid UTF-8 whatever the text held
    assert json.loads(data)["text"].startswith("a")


def test_objects_json_has_no_type_for_are_written_as_their_str() -> None:
    record: dict[Any, Any] = {"path": Path("/tmp/x"), "thing": Thing("t"), 3: "int key"}
    decoded = json.loads(json_line(record))
    assert decoded == {"path": "/tmp/x", "thing": "Thing(name='t')", "3": "int key"}


@pytest.mark.parametrize("raw", ["\x7f", "\x85", "\u2028", "\u2029", "\u202e", "\u2066", "\x1b"])
def test_what_a_terminal_or_splitlines_acts_on_is_escaped(raw: str) -> None:
    record = {"text": f"a{raw}b"}
    for line in (json_line(record), json_bytes(record).decode()):
        assert raw not in line
        assert len(line.splitlines()) == 1
        assert json.loads(line)["text"] == f"a{raw}b"


def test_printable_text_beyond_ascii_is_kept_as_it_is() -> None:
    record = {"text": "héllo → 世界"}
    assert "héllo → 世界" in json_line(record)
    assert "héllo → 世界".encode() in json_bytes(record)


def test_json_string_encodes_as_inside_a_record() -> None:
    assert json_string('a"b') == '"a\\"b"'
    assert json_string("x\ud800") == json.dumps("x\ud800", ensure_ascii=False)


def test_now_is_the_wall_clock_to_the_microsecond() -> None:
    before = time.time()
    stamp = now()
    assert before - 1e-6 <= stamp <= time.time()
    assert len(repr(stamp).partition(".")[2]) <= 6
