"""B9: start-up. Wall time of short CLI commands, against ``python -c pass``.

Each command runs ``repeats`` times after one warm-up (hyperfine-style); the median and
min-max are reported. Commands run twice over: with bytecode cached (as an installed
package has it; the cache goes to a scratch ``PYTHONPYCACHEPREFIX``, never into the
project) and, for reference, with ``PYTHONDONTWRITEBYTECODE=1`` and no cache, where every
module of the package is compiled at every start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.core import Config, Figure, Stat, secs, times

GOAL = 0.3


def cli() -> list[str]:
    script = Path(sys.executable).parent / "orchestrator"
    return [str(script)] if script.exists() else [sys.executable, "-m", "orchestrator"]


SMALL_PLAN = {
    "name": "bench-small",
    "workspace": "ws",
    "defaults": {"agent": "scripted"},
    "limits": {"max_concurrency": 2, "max_agents": 10},
    "tasks": [
        {"id": "a", "script": [{"say": "hello"}]},
        {"id": "b", "depends_on": ["a"], "script": [{"say": "world"}]},
        {"id": "c", "depends_on": ["a"], "script": [{"sleep": 0.01}]},
    ],
}


def time_once(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, err = proc.communicate()
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {err.decode()[-300:]}")
    return took


def time_commands(
    commands: dict[str, tuple[list[str], dict[str, str]]], cwd: Path, repeats: int
) -> dict[str, Stat]:
    """Each command ``repeats`` times, round-robin (so that drifting load hits all alike),
    after one warm-up round (page cache; bytecode cache where it is allowed)."""
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for i in range(repeats + 1):
        for name, (argv, env) in commands.items():
            took = time_once(argv, env, cwd)
            if i:
                samples[name].append(took)
    return {name: Stat.of(v) for name, v in samples.items()}


def measure(cfg: Config, want: set[str]) -> dict[str, Figure]:
    fig = Figure("B9", "start-up")
    repeats = cfg.pick(5, 1)
    where = cfg.tmp / "startup"
    where.mkdir()
    (where / "ws").mkdir()
    plan = where / "plan.yaml"
    plan.write_text(json.dumps(SMALL_PLAN))  # JSON is YAML
    responses = where / "responses"
    orch = cli()
    cached = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cached["PYTHONPYCACHEPREFIX"] = str(cfg.tmp / "pycache")
    uncached = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    uncached.pop("PYTHONPYCACHEPREFIX", None)
    # A recorded run for `status` to read (not timed).
    setup = subprocess.Popen(
        [*orch, "run", str(plan), "--responses", str(responses), "--no-live"],
        cwd=where, env=cached, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    _, err = setup.communicate()
    if setup.returncode != 0:
        raise RuntimeError(f"the small plan failed to run: {err.decode()[-300:]}")
    commands = {
        "--help": [*orch, "--help"],
        "status": [*orch, "status", "--responses", str(responses)],
        "validate": [*orch, "validate", str(plan)],
    }
    runs: dict[str, tuple[list[str], dict[str, str]]] = {
        "pass": ([sys.executable, "-c", "pass"], cached)
    }
    for name, argv in commands.items():
        runs[name] = (argv, cached)
        if not cfg.quick:
            runs[f"{name} uncached"] = (argv, uncached)
    stats = time_commands(runs, where, repeats)
    base = stats["pass"]
    data: dict[str, object] = {"python_c_pass": base.as_json(), "repeats": repeats}
    for name in commands:
        hot = stats[name]
        cold = stats.get(f"{name} uncached")
        ratio = Stat.of(v / base.median for v in hot.values)
        has_goal = name != "validate"
        fig.row(
            f"orchestrator {name}",
            measured=hot.fmt(secs),
            baseline=f"python -c pass {base.fmt(secs)}",
            ratio=ratio.fmt(times),
            goal=f"<= {secs(GOAL)}" if has_goal else "-",
            met=hot.median <= GOAL if has_goal else None,
            note=f"without a bytecode cache: {cold.fmt(secs)}" if cold else "",
        )
        data[name] = {"cached": hot.as_json(), "uncached": cold.as_json() if cold else None}
    fig.data = data
    return {"B9": fig}
