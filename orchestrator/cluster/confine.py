"""Confinement on a node: each host probes its own machine and makes the run's sandbox
decision there, exactly as a local run makes it on the driver's (`orchestrator.sandbox`).

A node's bubblewrap, user namespaces, cgroups and home are its own, so the decision cannot be
made on the driver: the driver sends the mode it decided (``required``, ``best-effort``,
``off``), each host probes with a real sandbox (`probe`) and builds the run's `Confinement`
with its own paths: private temp directories and the control directory under the host's
directory, the node's home secrets hidden. Its attempts then spawn through the same
`run_streaming(..., sandbox=...)` as local ones: bwrap's PID namespace, a read-only ``/``
with only the attempt's checkout and temp directory writable, cgroup limits.

Under ``required`` a node that cannot make a sandbox is not refused here: the host says why
(`NodeReport.refused`) and the driver gives it no attempts (and refuses the run when no node
can). Synchronous (it starts one bwrap and reads cgroupfs): call it in a thread.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from orchestrator.cluster.wire import NodeReport
from orchestrator.errors import EnvironmentProblem
from orchestrator.plan.model import Network, Plan, SandboxMode
from orchestrator.sandbox.confinement import Confinement
from orchestrator.sandbox.decision import decide
from orchestrator.sandbox.support import probe


def node_confinement(
    plan: Plan, mode: SandboxMode, root: Path, *, home: Path | None = None
) -> tuple[Confinement | None, NodeReport]:
    """This node's confinement for ``plan`` under ``mode`` (None: unconfined) and its report
    (``held`` left empty: the host fills it in); ``home``: the node's (this process's)."""
    if mode == "off":
        return None, NodeReport((), "off: agents run unconfined")
    network: Network = "none" if plan.sandbox.network == "none" else "full"
    support = probe(network)
    wanted = dataclasses.replace(plan, sandbox=dataclasses.replace(plan.sandbox, mode=mode))
    try:
        decision = decide(
            wanted, support, responses=root / "control", scratch=root / "scratch",
            home=home or Path(os.path.expanduser("~")),
        )  # fmt: skip
    except EnvironmentProblem:
        return None, NodeReport((), f"{mode}: no sandbox", refused=support.problem)
    return decision.confinement, NodeReport((), decision.summary, decision.warnings)
