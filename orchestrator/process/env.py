"""Child environments: what every process the run starts gets, and which names are secret.

An allowlist of the orchestrator's environment, the run's markers (``ORCHESTRATOR_RUN_ID``,
``ORCHESTRATOR_AGENT_ID``, depth) and what the plan adds; secrets only where named.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping

from orchestrator.plan.model import SECRET_NAMES
from orchestrator.process.procfs import AGENT_ID_VAR, OUTER_RUNS_VAR, RUN_ID_VAR

ENV_ALLOWLIST: tuple[str, ...] = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE", "TERM", "TZ",
    "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "NO_COLOR",
)  # fmt: skip
QUOTA_VAR = "ORCHESTRATOR_QUOTA"
"""The control socket an agent reaches its run through (`orchestrator add`, nested runs): the
run's own, or on a cluster node its host's, which relays additions to the driver."""
TOKEN_VAR = "ORCHESTRATOR_QUOTA_TOKEN"
"""The token a nested run shows its parent run (`orchestrator.control.quota`)."""


def child_env(
    *,
    agent_id: str,
    run_id: str,
    depth: int,
    extra: Mapping[str, str] = {},
    pass_env: tuple[str, ...] = (),
    source: Mapping[str, str] | None = None,
    run_vars: Mapping[str, str] = {},
) -> dict[str, str]:
    """The environment of a child process: an allowlist, the run's markers, nothing secret.

    ``run_vars`` (the run's limits and quota socket, for nested runs) come after the plan's
    ``extra``, so a task's ``env`` can never raise a limit its run passes down.

    The orchestrator's own interpreter directory goes first on PATH, so ``python`` in a plan
    means the Python the orchestrator runs on. The names in ``pass_env`` are copied too,
    except `SECRET_NAMES`: the API key never leaves the orchestrator (agents that use a
    model get a token of the model gateway instead).
    """
    src = os.environ if source is None else source
    env = {k: src[k] for k in ENV_ALLOWLIST if k in src}
    for name in pass_env:
        if name in src and name not in SECRET_NAMES:
            env[name] = src[name]
    env.update(extra)
    env.update(run_vars)
    bindir = os.path.dirname(sys.executable)
    path = env.get("PATH", os.defpath)
    if bindir and path.split(os.pathsep)[0] != bindir:
        env["PATH"] = bindir + os.pathsep + path
    env[AGENT_ID_VAR] = agent_id
    env[RUN_ID_VAR] = run_id
    # A run started by an agent of another run is nested in it (and in the runs that one is
    # nested in): its children carry their ids too, so those runs' sweeps find them.
    outer = [r for r in src.get(OUTER_RUNS_VAR, "").split(":") if r]
    outer += [src[RUN_ID_VAR]] if src.get(RUN_ID_VAR) else []
    env.pop(OUTER_RUNS_VAR, None)
    if outer:
        env[OUTER_RUNS_VAR] = ":".join(outer)
    env["ORCHESTRATOR_DEPTH"] = str(depth)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class ChildEnv(Mapping[str, str]):
    """`child_env` of one agent, built when first read and kept from then on.

    An agent that starts no process (a scripted agent that sleeps, an API agent between
    requests) never holds one: 10,000 idle agents would hold 10,000 copies of the same
    allowlist (about 0.9 KiB each). Until read it keeps only references to what it is built
    from, each shared with the task or the run.
    """

    __slots__ = ("_agent_id", "_built", "_depth", "_exports", "_max_depth", "_pass_env",
                 "_run_id", "_source", "_task_env")  # fmt: skip

    def __init__(
        self,
        *,
        agent_id: str,
        run_id: str,
        depth: int,
        task_env: tuple[tuple[str, str], ...],
        pass_env: tuple[str, ...],
        source: Mapping[str, str],
        max_depth: int,
        exports: Mapping[str, str],
    ) -> None:
        self._agent_id, self._run_id, self._depth = agent_id, run_id, depth
        self._task_env, self._pass_env, self._source = task_env, pass_env, source
        self._max_depth, self._exports = max_depth, exports
        self._built: dict[str, str] | None = None

    def _env(self) -> dict[str, str]:
        if self._built is None:
            self._built = child_env(
                agent_id=self._agent_id,
                run_id=self._run_id,
                depth=self._depth,
                extra=dict(self._task_env),
                pass_env=self._pass_env,
                source=self._source,
                run_vars={"ORCHESTRATOR_MAX_DEPTH": str(self._max_depth), **self._exports},
            )
        return self._built

    def __getitem__(self, key: str) -> str:
        return self._env()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._env())

    def __len__(self) -> int:
        return len(self._env())

    def __repr__(self) -> str:
        return f"ChildEnv({self._env()!r})"
