"""Child environments: what every process the run starts gets, and which names are secret.

An allowlist of the orchestrator's environment, the run's markers (``ORCHESTRATOR_RUN_ID``,
``ORCHESTRATOR_AGENT_ID``, depth) and what the plan adds; secrets only where named.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

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
