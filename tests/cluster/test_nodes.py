"""The driver's and a host's parts that need no Ray: placing attempts by node size, the
node's confinement decision, and the socket a remote agent adds tasks through."""

from __future__ import annotations

import asyncio
import collections
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.cluster.asks import open_ask_server, owner, problem
from orchestrator.cluster.confine import node_confinement
from orchestrator.cluster.nodes import Cluster, Host
from orchestrator.cluster.polling import MAX_CALLS, Poller, window_for
from orchestrator.control.channel import request
from orchestrator.errors import ClusterError
from orchestrator.plan.model import Limits, Plan, SandboxMode, Task
from orchestrator.process.procfs import process_start_time
from orchestrator.sandbox.support import probe

GiB = 2**30


def cluster_of(tmp_path: Path, *hosts: Host, memory: int = 2**26) -> Cluster:
    plan = Plan("p", (Task("a", agent="command", command=("true",)),), workspace=tmp_path,
                limits=Limits(memory=memory))  # fmt: skip
    cluster = Cluster("127.0.0.1:1", "run", tmp_path, plan=plan, hosts=list(hosts))
    cluster._looked = time.monotonic() + 3600  # no look for new nodes (there is no Ray here)
    return cluster


async def placements(cluster: Cluster, n: int) -> collections.Counter[str]:
    placed = [await cluster.place() for _ in range(n)]
    return collections.Counter(h.node for h in placed)


@pytest.mark.parametrize(
    ("sizes", "memory", "n", "expected"),
    [
        ({"small": (1, 64 * GiB), "big": (3, 64 * GiB)}, 2**26, 8, {"small": 2, "big": 6}),
        ({"a": (2, 64 * GiB), "b": (2, 64 * GiB)}, 2**26, 6, {"a": 3, "b": 3}),
        # the same CPUs, memory decides: 4 GiB agents on 8 GiB and 32 GiB nodes
        ({"lean": (8, 8 * GiB), "fat": (8, 32 * GiB)}, 4 * GiB, 10, {"lean": 2, "fat": 8}),
        # a node that offers Ray no CPUs (a head kept for the driver) gets nothing
        ({"head": (0, 64 * GiB), "w": (1, 64 * GiB)}, 2**26, 3, {"w": 3}),
    ],
)
async def test_attempts_go_where_they_fill_a_node_least(
    tmp_path: Path,
    sizes: dict[str, tuple[int, int]],
    memory: int,
    n: int,
    expected: dict[str, int],
) -> None:
    hosts = [Host(None, node, cpus, mem) for node, (cpus, mem) in sizes.items()]
    got = await placements(cluster_of(tmp_path, *hosts, memory=memory), n)
    assert dict(got) == expected


async def test_a_host_whose_attempt_ended_takes_the_next_one_and_dead_ones_none(
    tmp_path: Path,
) -> None:
    a, b = Host(None, "a", 1, 0), Host(None, "b", 1, 0)
    cluster = cluster_of(tmp_path, a, b)
    assert (await cluster.place(), await cluster.place()) == (a, b)
    a.running -= 1  # its attempt ended
    assert await cluster.place() is a
    cluster.lost(b)
    cluster._looked = time.monotonic() + 3600
    assert [await cluster.place() for _ in range(3)] == [a, a, a]


async def test_when_no_node_offers_cpus_attempts_are_spread_by_count(tmp_path: Path) -> None:
    hosts = [Host(None, n, 0, 0) for n in "ab"]
    got = await placements(cluster_of(tmp_path, *hosts), 4)
    assert dict(got) == {"a": 2, "b": 2}


def test_a_node_decides_its_own_confinement_with_its_own_paths(tmp_path: Path) -> None:
    plan = Plan("p", (), workspace=tmp_path)
    conf, report = node_confinement(plan, "off", tmp_path)
    assert conf is None
    assert report.sandbox.startswith("off")
    support = probe()
    modes: tuple[SandboxMode, ...] = ("required", "best-effort")
    for mode in modes:
        conf, report = node_confinement(plan, mode, tmp_path, home=tmp_path / "home")
        if support.can_sandbox:
            assert conf is not None
            assert conf.scratch == tmp_path / "scratch"
            assert tmp_path / "control" in conf.protected
            assert report.refused == ""
        elif mode == "required":
            assert conf is None
            assert report.refused == support.problem
        else:
            assert conf is None
            assert report.refused == ""
            assert report.warnings


@pytest.mark.parametrize(
    ("req", "wrong"),
    [
        ({"op": "add", "id": "x", "prompt": "p", "depends_on": ["a"]}, None),
        ({"id": "x"}, None),
        ({"op": "lease", "agents": 3}, "only add"),
        ({"op": "add", "id": 3}, "as text"),
        ({"op": "add", "id": "x", "depends_on": "a"}, "list of ids"),
        ({"op": "add", "id": "x", "token": "t"}, "unexpected field"),
        (["add"], "JSON object"),
    ],
)
def test_the_shape_of_an_addition_from_a_node(req: Any, wrong: str | None) -> None:
    why = problem(req)
    assert why is None if wrong is None else wrong in (why or ""), why


def test_the_asker_is_the_attempt_whose_process_tree_it_is_in() -> None:
    parent = os.getppid()
    leaders = {parent: process_start_time(parent)}
    assert owner(os.getpid(), leaders, own_pid=-1) == parent
    assert owner(os.getpid(), {parent: 1}, own_pid=-1) is None, "a recycled pid is no leader"
    assert owner(os.getpid(), leaders, own_pid=os.getpid()) is None, "the host itself asks"
    assert owner(os.getpid(), {}, own_pid=-1) is None


async def test_the_node_socket_relays_an_addition_for_the_process_that_asks(
    tmp_path: Path,
) -> None:
    relayed: list[tuple[int, dict[str, Any]]] = []
    me = os.getpid()

    async def relay(pid: int, fields: dict[str, Any]) -> dict[str, Any] | None:
        relayed.append((pid, fields))
        return {"ok": True, "added": fields["id"]} if fields["id"] != "stray" else None

    path = tmp_path / "add.sock"
    async with open_ask_server(path, relay):
        assert os.stat(path).st_mode & 0o777 == 0o600
        ok = await asyncio.to_thread(request, path, {"op": "add", "id": "x", "prompt": "p"})
        stray = await asyncio.to_thread(request, path, {"op": "add", "id": "stray"})
        bad = await asyncio.to_thread(request, path, {"op": "add", "id": "y", "kind": 1})
        lease = await asyncio.to_thread(request, path, {"op": "lease", "agents": 1})
    assert ok == {"ok": True, "added": "x"}
    assert relayed[0] == (me, {"id": "x", "prompt": "p"}), "the asker is its peer, not a field"
    assert stray is not None
    assert stray["refused"]["rule"] == "not-an-agent"
    assert bad is not None
    assert bad["code"] == 2
    assert lease is not None
    assert "only add" in lease["error"]
    assert len(relayed) == 2, "a malformed request never reaches the driver"
    assert not path.exists()


@pytest.mark.parametrize(("nodes", "window"), [(1, 0.05), (20, 0.05), (40, 0.1), (100, 0.25)])
def test_the_poll_window_widens_with_the_cluster(nodes: int, window: float) -> None:
    assert window_for(nodes) == pytest.approx(window)
    assert nodes / window_for(nodes) <= MAX_CALLS, "busy nodes together stay under the cap"


def test_a_lost_node_narrows_the_others_windows_again(tmp_path: Path) -> None:
    hosts = [Host(None, f"n{i}", 1, 0) for i in range(41)]
    for host in hosts:
        host.poller = Poller(None, (), window_for(len(hosts)))
    cluster = cluster_of(tmp_path, *hosts)
    cluster.lost(hosts[0])
    assert {h.poller.window for h in hosts[1:] if h.poller} == {window_for(40)}
    cluster.lost(hosts[1])
    assert {h.poller.window for h in hosts[2:] if h.poller} == {window_for(39)}


async def test_a_node_that_died_since_it_was_listed_gets_no_host(tmp_path: Path) -> None:
    """Ray lists a node, then declares it dead before its host is placed there: the run is
    told there is no live node (a clear error), not shown Ray's traceback."""
    exceptions = pytest.importorskip("ray.exceptions")
    gone = "The node specified via NodeAffinitySchedulingStrategy doesn't exist any more"

    class Actor:
        class ready:
            @staticmethod
            async def remote(*args: Any) -> None:
                raise exceptions.ActorUnschedulableError(gone)

    class ActorClass:
        def options(self, **kw: Any) -> ActorClass:
            return self

        def remote(self, *args: Any) -> type[Actor]:
            return Actor

    node_id = "d7a1760e45ca41abb798f8e0fd9e16c805c76d71cf77e4d895abb9c6"
    listed = {"NodeManagerAddress": "192.0.2.2", "NodeID": node_id, "Alive": True}
    cluster = cluster_of(tmp_path)
    cluster._ray = SimpleNamespace(
        remote=lambda **kw: lambda cls: ActorClass(), nodes=lambda: [listed], exceptions=exceptions
    )
    cluster._lost = (exceptions.RayActorError, exceptions.ActorUnavailableError)
    with pytest.raises(ClusterError, match="has no live node"):
        await cluster._add_hosts()
    assert cluster.hosts == []
