"""The Ray executor: attempts run on a cluster's nodes while this process stays the driver.

`nodes` is the run's connection to the cluster (a `host.NodeHost` actor per node, node
loss, leaving the cluster clean); `executor` wraps each agent kind in a `RemoteAgent` that
sends an attempt to a host and turns what comes back into the events a local attempt
emits; `leased` moves isolation's leased checkout to a node and its change back into the checkout
(isolation lands it); `workspace` does it for ``isolation: none`` and holds the git steps;
`wire` is what travels between them. Ray is imported only in `nodes`, and only when a plan
asks for it (``executor: ray`` or ``run --cluster``); this module imports nothing until
`remote_agents` finds a run that does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.agents.base import Agent
    from orchestrator.cluster.executor import ClusterAgents
    from orchestrator.isolation.checkouts import Workspaces
    from orchestrator.plan.model import Plan, SandboxMode


def remote_agents(
    plan: Plan, local: Callable[[str], Agent], address: str | None, run_id: str, responses: Path,
    places: Workspaces | None = None, *, sandbox: SandboxMode = "off",
) -> ClusterAgents | None:  # fmt: skip
    """The run's agents on a Ray cluster (``address``: ``run --cluster``, which beats the
    plan's ``executor: ray``), their `Cluster` as ``.cluster``; None: a local run.
    ``places``: the run's workspaces (isolation's checkouts, where remote work lands);
    ``sandbox``: the run's sandbox mode (each node confines its attempts by it)."""
    if address is None and plan.executor != "ray":
        return None
    from orchestrator.cluster.executor import ClusterAgents
    from orchestrator.cluster.nodes import Cluster

    cluster = Cluster(
        address or plan.address, run_id, plan.workspace, (responses,), places,
        plan=plan, sandbox=sandbox,
    )  # fmt: skip
    return ClusterAgents(plan, local, cluster)
