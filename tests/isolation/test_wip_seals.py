"""The work of agents that did not succeed is sealed in turn, a few at a time, and all of it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from isohelp import make_repo

from orchestrator.isolation import checkouts as checkouts_mod
from orchestrator.isolation.checkouts import Checkouts
from orchestrator.isolation.repo import open_repo


async def test_a_burst_of_stops_seals_at_most_the_gate_at_once_and_every_one_of_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst of stops (cancel --all, a deadline) once sealed every checkout at once: four
    to six git processes each on a two-CPU machine, while the next stop waited (B8)."""
    ws = make_repo(tmp_path / "ws", {"app.py": "print('hi')\n"})
    monkeypatch.setattr(checkouts_mod, "wip_sealers", lambda: 2)  # the gate, as on a 4-CPU machine
    real = checkouts_mod.seal_wip
    inside = 0
    most = 0
    sealed: list[str] = []

    async def counted(git: Any, slot: Path, *, note: str) -> None:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        try:
            await asyncio.sleep(0.01)  # let every other hand-back reach the gate meanwhile
            await real(git, slot, note=note)
            sealed.append(slot.name)
        finally:
            inside -= 1

    monkeypatch.setattr(checkouts_mod, "seal_wip", counted)
    checkouts = Checkouts(
        await open_repo(ws), "r1", max_slots=5, record=lambda *a, **k: None, exclude=[]
    )
    await checkouts.start(resume=False)
    places = [await checkouts.lease(f"a{i}", "task", f"a{i}") for i in range(5)]
    for place in places:
        (place.path / f"{place.agent_id}.txt").write_text("half done\n")
    async with asyncio.timeout(60):
        ended = await asyncio.gather(*(
            checkouts.hand_back(p, "cancelled", "stopped", summary="", kind="scripted",
                                prompt="")
            for p in places
        ))  # fmt: skip
    assert [e.state for e in ended] == ["cancelled"] * 5
    assert most == 2
    assert len(sealed) == 5
