"""The feed's frames: a patch from any earlier version, merged into that version's state,
is the whole state of the newer one; rows that did not change are not sent again."""

from __future__ import annotations

import json
from typing import Any

from orchestrator.web.feed import Frame, next_frame

HEAD = {"run": {"plan": "p"}, "alive": True, "summary": {"tasks": 3}, "running": []}


def row(tid: str, state: str) -> dict[str, Any]:
    return {"id": tid, "state": state, "ended": None}


def merged(state: dict[str, Any], patch: dict[str, Any]) -> list[dict[str, Any]]:
    """What the page does with a patch."""
    have = {r["id"]: r for r in state["tasks"]} | {r["id"]: r for r in patch["tasks"]}
    return [have[tid] for tid in patch.get("order") or [r["id"] for r in state["tasks"]]]


def test_a_patch_carries_only_the_rows_changed_since_its_base_and_the_order_when_it_changed() -> (
    None
):
    f1 = next_frame(Frame(), HEAD, [row("a", "running"), row("b", "running")], 1)
    f2 = next_frame(f1, HEAD, [row("a", "running"), row("b", "succeeded")], 2)
    f3 = next_frame(f2, HEAD, [row("a", "running"), row("b", "succeeded"), row("c", "queued")], 3)

    p21 = json.loads(f2.patch(1))
    assert p21["type"] == "patch"
    assert [r["id"] for r in p21["tasks"]] == ["b"]
    assert "order" not in p21
    assert p21["summary"] == HEAD["summary"]

    p31, p32 = json.loads(f3.patch(1)), json.loads(f3.patch(2))
    assert [r["id"] for r in p31["tasks"]] == ["b", "c"]
    assert [r["id"] for r in p32["tasks"]] == ["c"]
    assert p31["order"] == p32["order"] == ["a", "b", "c"]

    whole = json.loads(f3.text)
    assert whole == {"type": "state", **HEAD, "tasks": whole["tasks"]}
    for base, patch in ((f1, p31), (f2, p32)):
        assert merged(json.loads(base.text), patch) == whole["tasks"]


def test_a_frame_with_nothing_changed_sends_no_rows() -> None:
    rows = [row("a", "running")]
    f1 = next_frame(Frame(), HEAD, rows, 1)
    f2 = next_frame(f1, HEAD | {"alive": False}, [dict(r) for r in rows], 2)
    patch = json.loads(f2.patch(1))
    assert patch["tasks"] == []
    assert patch["alive"] is False
    assert json.loads(f2.text)["tasks"] == rows
