"""A run's connection to a Ray cluster: one `NodeHost` actor per live node, the workspace's
bases in the object store, node loss, and leaving the cluster clean.

Ray is imported here, in `Cluster.open`, and nowhere else: only a run that asks for a
cluster (``executor: ray``, ``run --cluster``) pays for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from orchestrator.cluster.host import NodeHost
from orchestrator.cluster.leased import LeasedBases
from orchestrator.cluster.polling import WINDOW, Poller, window_for
from orchestrator.cluster.wire import Change, NodeReport
from orchestrator.cluster.workspace import Snapshots
from orchestrator.errors import ClusterError
from orchestrator.isolation.checkouts import Checkouts, Workspaces
from orchestrator.plan.model import Plan, SandboxMode

NODES_EVERY = 30.0
"""How often a run looks for nodes that joined the cluster."""
_CLOSE_TIMEOUT = 30.0
KEEP_BASES = 16
"""Bases kept in the object store (a node that has one needs it no more)."""
HOST_ENV = {"env_vars": {"RAY_USE_UVLOOP": "0"}}
"""A host actor's runtime environment: asyncio's own event loop, not uvloop (Ray's choice
when it is installed, as the ``fast`` and ``dev`` extras do). uvloop starts a child by
fork(), which copies the actor's page tables (about 100 MB of Python and Ray): the git
commands of each attempt cost its node several ms of CPU that way, and the two hosts of
B16's `true` batch 40% of a core each. asyncio's loop starts it by vfork()."""


@dataclass(slots=True, eq=False)
class Host:
    """A node's host as the driver sees it: what it offers Ray and what this run put on it."""

    actor: Any
    node: str
    cpus: float = 1.0
    """The node's CPUs in Ray (``ray start --num-cpus``)."""
    memory: float = 0.0
    """The node's memory in Ray, bytes (0: unknown, not counted)."""
    running: int = 0
    alive: bool = True
    report: NodeReport | None = None
    poller: Poller | None = None
    """Its one poll in flight (runs in the cluster session's task group)."""

    def load(self, more: int = 0, *, need: float = 0.0) -> float:
        """The larger share of its CPUs and memory that its attempts (``more`` besides)
        take, each counted as one CPU and ``need`` bytes; a node without CPUs is full."""
        n = self.running + more
        if self.cpus <= 0:
            return math.inf
        share = n / self.cpus
        if self.memory > 0 and need > 0:
            share = max(share, n * need / self.memory)
        return share


@dataclass(slots=True)
class Cluster:
    """A run's view of a Ray cluster; `open` before the run, `aclose` after it."""

    address: str
    run_id: str
    workspace: Path
    exclude: tuple[Path, ...] = ()
    places: Workspaces | None = None
    """Isolation's checkouts: a remote attempt starts from its leased checkout and its change
    goes back into it (`LeasedBases`); else (``isolation: none``) from a snapshot of the
    shared workspace, its change applied there (`Snapshots`)."""
    plan: Plan | None = None
    """What each host needs to confine the run's attempts on its node."""
    sandbox: SandboxMode = "off"
    """The run's sandbox mode, decided on the driver; each node confines by it (`confine`)."""
    hosts: list[Host] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """What the nodes' confinement lacks, one line each, for the run's warnings."""
    _unconfined: dict[str, str] = field(default_factory=dict)
    """Nodes that cannot confine as ``sandbox: required`` asks: node -> why (no attempts)."""
    _bases: LeasedBases | Snapshots | None = None
    _bundles: dict[str, Any] = field(default_factory=dict)
    _bundling: asyncio.Lock = field(default_factory=asyncio.Lock)
    _ray: Any = None
    _lost: tuple[type[BaseException], ...] = ()
    _looked: float = 0.0
    _opened: bool = False
    _group: asyncio.TaskGroup | None = None
    _polling: list[asyncio.Task[None]] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Cluster]:
        """`open`, then `aclose` however the run ends (also when opening failed halfway).
        The hosts' pollers run in a task group the session owns; they end with it."""
        failure: BaseException | None = None
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                try:
                    await self.open()
                    yield self
                except BaseException as exc:  # raised again below as it is, not grouped
                    failure = exc
                finally:
                    self._group = None
                    for task in self._polling:
                        task.cancel()
        finally:
            await self.aclose()
        if failure is not None:
            raise failure

    async def open(self) -> None:
        try:
            import ray  # the `ray` extra: only a run that asks for a cluster pays for it
            from ray import exceptions
        except ImportError:
            hint = "install the ray extra: pip install 'orchestrator[ray]'"
            raise ClusterError(f"error: executor: ray, but Ray is not installed ({hint})") from None

        self._ray = ray
        self._lost = (exceptions.RayActorError, exceptions.ActorUnavailableError)
        try:
            await asyncio.to_thread(
                ray.init,
                address=self.address,
                namespace=f"orchestrator-{self.run_id}",
                logging_level=logging.ERROR,
                log_to_driver=False,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ClusterError(
                f"error: cannot reach the Ray cluster at {self.address}: {exc}"
            ) from exc
        if isinstance(self.places, Checkouts):
            self._bases = LeasedBases(self.places.repo, self.run_id)
        else:
            self._bases = Snapshots(self.workspace, exclude=self.exclude)
        await self._bases.open()
        await self._add_hosts()
        self._opened = True

    async def _add_hosts(self) -> None:
        ray = self._ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self._looked = time.monotonic()
        actor_class = ray.remote(num_cpus=0, max_restarts=0, max_concurrency=10_000)(NodeHost)
        known = {h.node for h in self.hosts} | set(self._unconfined)
        # the plan's settings (agents, sandbox) go once per host; each attempt brings its own
        # task (all the tasks with every attempt cost the driver ~9 us per task per attempt)
        plan = replace(self.plan, tasks=()) if self.plan else Plan("cluster", (), self.workspace)
        for info in await asyncio.to_thread(ray.nodes):
            node = f"{info['NodeManagerAddress']}/{info['NodeID'][:8]}"
            if not info.get("Alive") or node in known:
                continue
            where = NodeAffinitySchedulingStrategy(info["NodeID"], soft=False)
            options = {"scheduling_strategy": where, "runtime_env": HOST_ENV}
            actor = actor_class.options(**options).remote(self.run_id, node)
            try:
                report: NodeReport = await actor.ready.remote(plan, self.sandbox)
            except (*self._lost, ray.exceptions.ActorUnschedulableError):
                continue  # the node died since `ray.nodes()` listed it: it gets no attempts
            if report.held:
                await self._let_go(actor)
                raise ClusterError(
                    f"error: node {node} holds {', '.join(report.held)} in its environment: start "
                    "its Ray without the API key (remote agents use the run's gateway)"
                )
            if report.refused:
                await self._let_go(actor)
                self._unconfined[node] = report.refused
                self._warn(f"node {node} cannot make a sandbox ({report.refused}): it gets no "
                           "attempts (sandbox: required)")  # fmt: skip
                continue
            for warning in report.warnings:
                self._warn(f"node {node}: {warning}")
            resources = info.get("Resources") or {}
            cpus, memory = float(resources.get("CPU", 0)), float(resources.get("memory", 0))
            host = Host(actor, node, cpus, memory, report=report)
            host.poller = Poller(actor, self._lost, WINDOW)
            if self._group is None:
                await self._let_go(actor)
                raise RuntimeError("a Cluster is used inside its session() only")
            self._polling.append(self._group.create_task(host.poller.run()))
            self.hosts.append(host)
        self._widen()
        if not any(h.alive for h in self.hosts):
            if self._unconfined:
                why = "; ".join(f"{n}: {w}" for n, w in list(self._unconfined.items())[:3])
                raise ClusterError(
                    f"error: the plan needs a sandbox (sandbox: required) and no node of the Ray "
                    f"cluster at {self.address} can make one ({why}); nothing was started "
                    "(hint: install bubblewrap on the nodes, or write sandbox: best-effort in "
                    "the plan to run them unconfined with a warning)"
                )
            raise ClusterError(f"error: the Ray cluster at {self.address} has no live node")

    async def _let_go(self, actor: Any) -> None:
        """End a host that gets no attempts (it stops its socket and removes its directory)."""
        with contextlib.suppress(*self._lost):
            await actor.shutdown.remote()
        with contextlib.suppress(*self._lost):
            self._ray.kill(actor)

    def _warn(self, line: str) -> None:
        """Said once the cluster is open (the run's warnings); later, on stderr at once."""
        self.warnings.append(line)
        if self._opened:
            sys.stderr.write(f"warning: {line}\n")

    async def place(self) -> Host:
        """The live host whose node this attempt fills least, by its CPUs and memory in
        Ray: each attempt counts as one CPU and the plan's ``limits.memory`` (`Host.load`);
        ties go to the larger node. Its ``running`` is counted here; the caller gives it back
        when the attempt ends. Nodes that joined the cluster are looked for every
        `NODES_EVERY` seconds, and after a node was lost."""
        if time.monotonic() - self._looked > NODES_EVERY:
            await self._add_hosts()
        need = float(self.plan.limits.memory) if self.plan is not None else 0.0
        live = [h for h in self.hosts if h.alive]
        if not live:  # every node died since the last look
            raise ClusterError(f"error: the Ray cluster at {self.address} has no live node")
        if all(math.isinf(h.load(1, need=need)) for h in live):  # no node offers CPUs
            host = min(live, key=lambda h: h.running)
        else:
            host = min(live, key=lambda h: (h.load(1, need=need), -h.cpus))
        host.running += 1
        return host

    async def base(self, workspace: Path) -> tuple[str, Any, str]:
        """The base for an attempt in ``workspace``: its commit, that commit's bundle in the
        object store, and where ``workspace`` is inside it."""
        assert self._bases is not None
        sha, prefix = await self._bases.base(workspace)
        async with self._bundling:
            ref = self._bundles.pop(sha, None)
            if ref is None:
                bundle = await self._bases.bundle(sha)
                ref = await asyncio.to_thread(self._ray.put, bundle)
            self._bundles[sha] = ref  # the most recent last; old ones are let go
            while len(self._bundles) > KEEP_BASES:
                del self._bundles[next(iter(self._bundles))]
        return sha, ref, prefix

    async def integrate(self, change: Change, workspace: Path) -> None:
        """Write a returned change into ``workspace`` (`WorkspaceError` when it does not
        apply): the attempt's checkout, which isolation then seals and lands; or, with
        ``isolation: none``, the shared workspace itself."""
        assert self._bases is not None
        await self._bases.integrate(change, workspace)

    def driver_ip(self) -> str:
        """This machine's address on the route to the cluster's head (loopback for ``auto``:
        a cluster started on this machine; nodes elsewhere need ``address: HOST:PORT``)."""
        host = self.address.rsplit(":", 1)[0] if ":" in self.address else self.address
        if host in ("auto", "localhost", "") or host.startswith("127."):
            return "127.0.0.1"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect((host, 9))  # no packet is sent: this only picks the route
            except OSError:
                return "127.0.0.1"
            return str(probe.getsockname()[0])

    @property
    def lost_errors(self) -> tuple[type[BaseException], ...]:
        """What Ray raises for a call to an actor whose node (or process) died."""
        return self._lost

    def is_lost(self, exc: BaseException) -> bool:
        return isinstance(exc, self._lost)

    def lost(self, host: Host) -> None:
        """``host``'s node died: it gets no more attempts; nodes are looked up again."""
        host.alive = False
        self._looked = 0.0
        self._widen()

    def _widen(self) -> None:
        """Every node's poll window for the number of live nodes (`window_for`)."""
        live = [h for h in self.hosts if h.alive]
        for host in live:
            if host.poller is not None:
                host.poller.window = window_for(len(live))

    async def aclose(self) -> None:
        """Stop every host (each sweeps its node), then leave the cluster."""
        if self._ray is None:
            return
        ray, hosts, self.hosts = self._ray, self.hosts, []
        try:
            live = [h for h in hosts if h.alive]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CLOSE_TIMEOUT):
                    for host in live:
                        with contextlib.suppress(*self._lost):
                            await host.actor.shutdown.remote()
            for host in hosts:
                with contextlib.suppress(*self._lost):
                    ray.kill(host.actor)
        finally:
            self._bundles.clear()
            await asyncio.to_thread(ray.shutdown)
            if self._bases is not None:
                self._bases.close()
