#!/usr/bin/env python3
"""Runs `sleeper` through run_streaming, prints its pid once it sleeps; SIGKILL me to test that.

Usage: mini_orchestrator.py auto|setpriv|prctl|off  (how the child gets its death signal)
"""

import asyncio
import os
import sys
from pathlib import Path

from orchestrator.process.spawn import run_streaming

pids: list[int] = []


def on_line(stream: str, line: str) -> None:
    # Only once the child is asleep: killed earlier, it could die of a broken pipe instead.
    if line == "ready":
        print(f"child {pids[0]}", flush=True)


async def main() -> None:
    sleeper = [sys.executable, str(Path(__file__).with_name("sleeper.py"))]
    await run_streaming(
        sleeper,
        cwd=Path.cwd(),
        env=dict(os.environ),
        on_line=on_line,
        on_start=pids.append,
        pdeathsig=sys.argv[1],  # type: ignore[arg-type]
    )


asyncio.run(main())
