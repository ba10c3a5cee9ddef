"""Orphan-proofing: adopted descendants are reaped, our own children never are."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from orchestrator.process import orphans, spawn


async def test_reaping_as_fast_as_possible_never_takes_a_child_we_spawned(
    tmp_path: Path,
) -> None:
    """The reaper runs on the loop's thread; a spawn under way pauses it, so asyncio still
    gets every exit code of its own children (a stolen one would read as 255)."""
    stop = asyncio.Event()

    async def reap_flat_out() -> None:
        while not stop.is_set():
            orphans.reap_orphans()
            await asyncio.sleep(0)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(reap_flat_out())
        codes = [
            await spawn.run_streaming(
                ["/bin/true"],
                cwd=tmp_path,
                env=dict(os.environ),
                on_line=lambda _stream, _line: None,
            )
            for _ in range(100)
        ]
        stop.set()
    assert codes == [0] * 100


async def test_an_adopted_double_forked_descendant_is_reaped(tmp_path: Path) -> None:
    script = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(0.2)\n"
        "        os._exit(0)\n"
        "    os._exit(0)\n"
        "os.wait()\n"
        "print(os.getpid())\n"
    )
    assert orphans.set_child_subreaper()
    try:
        code = await spawn.run_streaming(
            [sys.executable, "-c", script],
            cwd=tmp_path,
            env=dict(os.environ),
            on_line=lambda _stream, _line: None,
            drain=0.5,
        )
        assert code == 0
        reaped: list[int] = []
        for _ in range(200):
            reaped += orphans.reap_orphans()
            if reaped:
                break
            await asyncio.sleep(0.02)
        assert len(reaped) == 1
    finally:
        import ctypes

        ctypes.CDLL(None).prctl(36, 0, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER off for the suite
