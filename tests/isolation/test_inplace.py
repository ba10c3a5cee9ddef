"""``isolation: none``: every agent works in the workspace itself (`InPlace`)."""

from __future__ import annotations

from pathlib import Path

from orchestrator.isolation.inplace import InPlace


async def test_overlapping_writers_are_warned_about_once_and_then_not_tracked(
    tmp_path: Path,
) -> None:
    said: list[str] = []
    places = InPlace(tmp_path, warn=said.append)
    a = await places.lease("a", "task", "a")
    await places.lease("b", "task", "b")
    assert len(said) == 1
    assert "b writes in" in said[0]
    assert "while a still run" in said[0]
    for i in range(100):  # said once: the names of later writers are not kept
        await places.lease(f"w{i}", "task", f"w{i}")
    assert len(said) == 1
    assert not places._writers
    await places.hand_back(a, "succeeded", "", summary="", kind="scripted", prompt="")


async def test_writers_one_after_another_and_builds_are_not_warned_about(tmp_path: Path) -> None:
    said: list[str] = []
    places = InPlace(tmp_path, warn=said.append)
    for name in ("a", "b", "c"):
        place = await places.lease(name, "task", name)
        await places.lease(f"build-{name}", "build", name)  # a build check writes nothing
        await places.hand_back(place, "succeeded", "", summary="", kind="scripted", prompt="")
    assert said == []
    assert not places._writers


async def test_without_a_warning_to_give_no_writer_is_tracked(tmp_path: Path) -> None:
    places = InPlace(tmp_path)
    for i in range(10):
        await places.lease(f"w{i}", "task", f"w{i}")
    assert not places._writers
