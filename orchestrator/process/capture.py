"""Short helper commands whose whole output is wanted (git plumbing): run, capture, reap.

Unlike agents (`orchestrator.process.spawn`), these are quick, bounded tools the orchestrator
runs for itself. Each runs in a session of its own; a cancellation or a timeout kills its
group and reaps it before the exception goes on, so none outlives the call.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.process import orphans


@dataclass(frozen=True, slots=True)
class Captured:
    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace").strip()


async def run_captured(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    limit: float = 300.0,
) -> Captured:
    """Run ``argv`` to its end and return what it printed; TimeoutError after ``limit`` s."""
    proc = await start_child(
        *argv,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(limit):
            out, err = await proc.communicate(stdin)
    except BaseException:
        if proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await asyncio.shield(proc.wait())
        raise
    finally:
        release(proc)
    assert proc.returncode is not None
    return Captured(tuple(argv), proc.returncode, out, err)


async def start_child(*argv: str, **options: Any) -> asyncio.subprocess.Process:
    """`asyncio.create_subprocess_exec`, the child kept from the orphan reaper: in `SPAWNED`
    before anything else runs (the reaper holds off while it starts) until `release`. Taken
    by the reaper, it would read to asyncio as exit code 255 ("Unknown child process")."""
    with orphans.STARTING:
        proc = await asyncio.create_subprocess_exec(*argv, **options)
        orphans.SPAWNED.add(proc.pid)
    return proc


def release(proc: asyncio.subprocess.Process) -> None:
    """Once asyncio has reaped it: the reaper may take a new process with its pid."""
    if proc.returncode is not None:
        orphans.SPAWNED.discard(proc.pid)
