"""The web view's server against a real run: token and origin checks, every task of the plan
in the pushed state, live changes, progress streams, and cancel through the page's API."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from clirun import Fleet, poll, task

from orchestrator.web.server import TOKEN_HEADER, WebServer, open_server

pytestmark = pytest.mark.timeout(90)
WAIT = 30.0
"""Gross bound for a state to arrive: only detects hangs (a loaded machine is slow)."""


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.close()


@pytest.fixture
async def live(fleet: Fleet) -> AsyncIterator[tuple[Fleet, WebServer]]:
    """A run with a long task, one waiting on it, and a quick one; served for the test."""
    fleet.plan(
        task("slow", {"say": "working"}, {"sleep": 60}),
        task("after", deps=("slow",)),
        task("quick", {"say": "hello from quick"}),
    )
    fleet.start("run", "plan.yaml", "--no-live")
    await asyncio.to_thread(fleet.wait_state, "slow", "running")
    async with open_server(WebServer(fleet.responses)) as server:
        yield fleet, server


async def next_state(
    ws: aiohttp.ClientWebSocketResponse, until: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    async with asyncio.timeout(WAIT):
        async for msg in ws:
            data = json.loads(msg.data)
            if data["type"] == "state" and until(data):
                return data
    raise AssertionError("the socket closed")


def rows(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in state["tasks"]}


async def test_requests_without_the_token_or_from_elsewhere_are_refused(
    live: tuple[Fleet, WebServer],
) -> None:
    _, server = live
    base = f"http://127.0.0.1:{server.port}"
    async with aiohttp.ClientSession() as http:
        for url, headers in [
            (f"{base}/", {}),
            (f"{base}/?token=wrong", {}),
            (f"{base}/api/state", {}),
            (f"{base}/ws", {}),
            (server.url, {"Host": "evil.example:80"}),  # DNS rebinding
        ]:
            async with http.get(url, headers=headers) as r:
                assert r.status == 403, url
        async with http.get(server.url) as r:
            assert r.status == 200
            page = await r.text()
            assert "<script>" in page
            assert "Content-Security-Policy" in r.headers


async def test_the_state_shows_every_task_and_changes_arrive_live(
    live: tuple[Fleet, WebServer],
) -> None:
    _, server = live
    ws_url = f"ws://127.0.0.1:{server.port}/ws?token={server.token}"
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as ws:
        state = await next_state(ws, lambda s: rows(s)["quick"]["state"] == "succeeded")
        got = rows(state)
        assert set(got) == {"slow", "after", "quick"}
        assert got["slow"]["state"] == "running"
        assert got["after"]["state"] == "waiting"
        assert got["after"]["waiting_on"] == ["slow"]
        assert state["summary"]["tasks"] == 3
        assert [a["id"] for a in state["running"]] == ["slow"]
        await ws.send_json({"op": "follow", "agent": "quick", "offset": 0})
        async with asyncio.timeout(WAIT):
            text, svg = "", ""
            while "status: succeeded" not in text or not svg:
                msg = json.loads((await ws.receive()).data)
                if msg["type"] == "progress":
                    text += msg["text"]
                elif msg["type"] == "timeline":
                    svg = msg["svg"]
        assert "hello from quick" in text
        assert svg.startswith("<svg")


async def test_cancel_needs_the_header_and_our_origin_then_stops_the_agent(
    live: tuple[Fleet, WebServer],
) -> None:
    _, server = live
    cancel = f"http://127.0.0.1:{server.port}/api/cancel?token={server.token}"
    body = {"agents": ["slow"]}
    async with aiohttp.ClientSession() as http:
        async with http.post(cancel, json=body) as r:
            assert r.status == 403  # token in the query only: a forged form could do that
        evil = {TOKEN_HEADER: server.token, "Origin": "http://evil.example"}
        async with http.post(cancel, json=body, headers=evil) as r:
            assert r.status == 403
        ours = {TOKEN_HEADER: server.token}
        async with http.post(cancel, json={"agents": [1]}, headers=ours) as r:
            assert r.status == 400
        ws_url = f"ws://127.0.0.1:{server.port}/ws?token={server.token}"
        async with http.ws_connect(ws_url) as ws:
            await next_state(ws, lambda s: rows(s)["slow"]["state"] == "running")
            async with http.post(cancel, json=body, headers=ours) as r:
                assert r.status == 200
                assert (await r.json())["stopped"] == ["slow"]
            state = await next_state(ws, lambda s: rows(s)["slow"]["state"] == "cancelled")
            assert rows(state)["after"]["state"] in ("waiting", "skipped")


async def test_a_page_that_asks_for_patches_gets_the_state_once_then_the_rows_that_changed(
    live: tuple[Fleet, WebServer],
) -> None:
    _, server = live
    cancel = f"http://127.0.0.1:{server.port}/api/cancel?token={server.token}"
    kinds: list[str] = []
    have: dict[str, dict[str, Any]] = {}

    async def merge_until(ws: aiohttp.ClientWebSocketResponse, done: str) -> list[list[str]]:
        """Merge states and patches until the row of ``done`` ended; the ids each carried."""
        carried = []
        async with asyncio.timeout(WAIT):
            async for msg in ws:
                data = json.loads(msg.data)
                if data["type"] in ("state", "patch"):
                    kinds.append(data["type"])
                    have.update(rows(data))
                    carried.append(sorted(rows(data)))
                    if have.get(done, {}).get("ended"):
                        return carried
        raise AssertionError("the socket closed")

    async with aiohttp.ClientSession() as http:
        ws_url = f"ws://127.0.0.1:{server.port}/ws?patches=1&token={server.token}"
        async with http.ws_connect(ws_url) as ws:
            await merge_until(ws, "quick")
            assert kinds[0] == "state"
            assert set(have) == {"slow", "after", "quick"}
            async with http.post(cancel, json={"agents": ["slow"]},
                                 headers={TOKEN_HEADER: server.token}) as r:  # fmt: skip
                assert r.status == 200
            carried = await merge_until(ws, "slow")
        assert set(kinds[1:]) == {"patch"}
        assert all("quick" not in ids for ids in carried)  # it did not change
        assert have["slow"]["state"] == "cancelled"
        plain = f"ws://127.0.0.1:{server.port}/ws?token={server.token}"
        async with http.ws_connect(plain) as ws:
            whole = rows(await next_state(ws, lambda s: rows(s)["slow"]["state"] == "cancelled"))
        assert (have["quick"], have["slow"]) == (whole["quick"], whole["slow"])


def test_the_server_of_run_web_dies_with_a_killed_orchestrator(fleet: Fleet) -> None:
    fleet.plan(task("slow", {"sleep": 60}))
    proc = fleet.start("run", "plan.yaml", "--no-live", "--web")
    err_log = fleet.logs / f"{len(fleet.procs)}.err"
    url = poll(
        lambda: (m := re.search(r"web: (http://\S+)", err_log.read_text())) and m[1],
        timeout=30,
        what="the web URL on stderr",
    )
    port = int(url.split(":")[2].split("/")[0])
    os.kill(proc.pid, signal.SIGKILL)

    def refused() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) != 0

    poll(refused, timeout=30, what="the web server gone with its orchestrator")
    assert fleet.call("status").code == 0  # and the run's leftovers are stopped as ever


async def test_cancel_after_turn_through_the_page_api(live: tuple[Fleet, WebServer]) -> None:
    """An agent that talks to no model stops at once when asked to stop after its turn."""
    _, server = live
    cancel = f"http://127.0.0.1:{server.port}/api/cancel?token={server.token}"
    ours = {TOKEN_HEADER: server.token}
    async with aiohttp.ClientSession() as http:
        ws_url = f"ws://127.0.0.1:{server.port}/ws?token={server.token}"
        async with http.ws_connect(ws_url) as ws:
            await next_state(ws, lambda s: rows(s)["slow"]["state"] == "running")
            body = {"agents": ["slow"], "after_turn": True}
            async with http.post(cancel, json=body, headers=ours) as r:
                assert r.status == 200, await r.text()
            await next_state(ws, lambda s: rows(s)["slow"]["state"] == "cancelled")


def test_run_web_on_a_busy_port_runs_without_its_page(fleet: Fleet) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        fleet.plan(task("a", {"say": "hello"}))
        done = fleet.cli("run", "plan.yaml", "--no-live", "--web", "--port", str(port))
    assert done.code == 0, done.text
    assert "the page cannot be served" in done.err
    assert "Traceback" not in done.text


async def test_past_runs_are_listed_and_open_read_only_with_the_token(fleet: Fleet) -> None:
    fleet.plan(task("old", {"say": "words of the first run"}), name="first")
    assert fleet.cli("run", "first.yaml", "--no-live").code == 0
    fleet.plan(task("new", {"say": "words of the second run"}), name="second")
    assert fleet.cli("run", "second.yaml", "--no-live").code == 0
    async with open_server(WebServer(fleet.responses)) as server, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{server.port}"
        async with http.get(f"{base}/api/runs") as r:
            assert r.status == 403
        async with http.get(f"{base}/api/runs?token={server.token}") as r:
            runs = (await r.json())["runs"]
        assert [(x["plan"], x["current"], x["followed"]) for x in runs] == [
            ("second", True, True),
            ("first", False, False),
        ]
        old = runs[1]
        assert (old["state"], old["exit_code"]) == ("finished", 0)
        assert old["duration"] > 0
        assert {"id", "started", "ended", "exit_code", "cost_usd"} <= set(old)
        assert "responses" not in old  # no paths of this machine on the page
        past = f"{base}/api/runs/{old['id']}"
        async with http.get(past) as r:
            assert r.status == 403
        async with http.get(f"{past}?token={server.token}") as r:
            got = await r.json()
        assert [t["id"] for t in got["state"]["tasks"]] == ["old"]
        assert got["state"]["tasks"][0]["state"] == "succeeded"
        assert got["timeline"]["svg"].startswith("<svg")
        async with http.get(f"{past}/progress?token={server.token}&agent=old&offset=0") as r:
            text = await r.json()
        assert "words of the first run" in text["text"]
        assert text["next"] > 0
        async with http.get(f"{past}/progress?token={server.token}&agent=old&offset=-1") as r:
            assert r.status == 400
        async with http.get(f"{past}/progress?token={server.token}&agent=../x&offset=0") as r:
            assert r.status == 404
        async with http.get(f"{base}/api/runs/nope?token={server.token}") as r:
            assert r.status == 404
        cancel = f"{base}/api/cancel?token={server.token}"
        body = {"all": True, "run": old["id"]}
        async with http.post(cancel, json=body, headers={TOKEN_HEADER: server.token}) as r:
            assert r.status == 409
            assert (await r.json())["error"] == "a past run is read-only"
    archived = fleet.responses / ".runs" / old["id"]
    async with open_server(WebServer(archived, history=fleet.responses)) as server:
        listing = f"http://127.0.0.1:{server.port}/api/runs?token={server.token}"
        async with aiohttp.ClientSession() as http, http.get(listing) as r:
            runs = (await r.json())["runs"]
    assert [(x["plan"], x["followed"]) for x in runs] == [("second", False), ("first", True)]
