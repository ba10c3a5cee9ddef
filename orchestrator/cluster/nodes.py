"""A run's connection to a Ray cluster: one `NodeHost` actor per live node, the workspace's
bases in the object store, node loss, and leaving the cluster clean.

Ray is imported here, in `Cluster.open`, and nowhere else: only a run that asks for a
cluster (``executor: ray``, ``run --cluster``) pays for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.cluster.host import NodeHost
from orchestrator.cluster.leased import LeasedBases
from orchestrator.cluster.wire import Change
from orchestrator.cluster.workspace import Snapshots
from orchestrator.errors import ClusterError
from orchestrator.isolation.checkouts import Checkouts, Workspaces

NODES_EVERY = 30.0
"""How often a run looks for nodes that joined the cluster."""
_CLOSE_TIMEOUT = 30.0
KEEP_BASES = 16
"""Bases kept in the object store (a node that has one needs it no more)."""


@dataclass(slots=True, eq=False)
class Host:
    actor: Any
    node: str
    running: int = 0
    alive: bool = True


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
    hosts: list[Host] = field(default_factory=list)
    _bases: LeasedBases | Snapshots | None = None
    _bundles: dict[str, Any] = field(default_factory=dict)
    _bundling: asyncio.Lock = field(default_factory=asyncio.Lock)
    _ray: Any = None
    _lost: tuple[type[BaseException], ...] = ()
    _looked: float = 0.0

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Cluster]:
        """`open`, then `aclose` however the run ends (also when opening failed halfway)."""
        try:
            await self.open()
            yield self
        finally:
            await self.aclose()

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

    async def _add_hosts(self) -> None:
        ray = self._ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self._looked = time.monotonic()
        actor_class = ray.remote(num_cpus=0, max_restarts=0, max_concurrency=10_000)(NodeHost)
        known = {h.node for h in self.hosts}
        for info in await asyncio.to_thread(ray.nodes):
            node = f"{info['NodeManagerAddress']}/{info['NodeID'][:8]}"
            if not info.get("Alive") or node in known:
                continue
            where = NodeAffinitySchedulingStrategy(info["NodeID"], soft=False)
            actor = actor_class.options(scheduling_strategy=where).remote(self.run_id, node)
            try:
                held = await actor.ready.remote()
            except self._lost:
                continue
            if held:
                ray.kill(actor)
                raise ClusterError(
                    f"error: node {node} holds {', '.join(held)} in its environment: start its Ray "
                    "without the API key (remote agents use the run's gateway)"
                )
            self.hosts.append(Host(actor, node))
        if not any(h.alive for h in self.hosts):
            raise ClusterError(f"error: the Ray cluster at {self.address} has no live node")

    async def place(self) -> Host:
        """The live host with the fewest attempts running (nodes that joined the cluster
        are looked for every `NODES_EVERY` seconds, and after a node was lost)."""
        if time.monotonic() - self._looked > NODES_EVERY:
            await self._add_hosts()
        return min((h for h in self.hosts if h.alive), key=lambda h: h.running)

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
