"""Tasks added from a node: the host's control socket, which `orchestrator add` run by a
remote agent reaches (its ``ORCHESTRATOR_QUOTA`` names it on the node).

The socket speaks the run's protocol for ``add`` (one JSON request per connection, one JSON
answer, at most `MAX_REQUEST` bytes, the same shape rules as the run's own socket). Who asks
is never taken from the request: the host finds the attempt from the connecting process
(its peer credentials, then its parents up to a process an attempt of this host started,
checked by start time), relays the request to the driver with that attempt's events, and
the driver answers it as that attempt, through the same checks (`growth.answer`: the plan's
rules, the governor's limits) as a local agent's. A process that belongs to no attempt of
this host is refused; so is every op but ``add`` (nested runs draw from their parent through
its socket, which a node cannot reach).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from orchestrator.process.procfs import process_start_time, stat_fields

MAX_REQUEST = 64 * 1024
MAX_ANCESTRY = 64
FIELDS = ("id", "prompt", "kind", "depends_on")
_READ_TIMEOUT = 10.0

Relay = Callable[[int, dict[str, Any]], Awaitable[dict[str, Any] | None]]
"""Given the asking process's pid and the request: the driver's answer, or None when that
process belongs to no attempt of this host."""


def problem(request: object) -> str | None:
    """What is wrong with an ``add`` request's shape (None: nothing): an object with
    ``op: add``, ``id``, ``prompt`` and ``kind`` as text and ``depends_on`` a list of ids."""
    if not isinstance(request, dict):
        return "a request is a JSON object"
    if request.get("op", "add") != "add":
        op = str(request.get("op"))[:40]
        return f"control op {op!r} is not answered for an agent on a cluster node (only add)"
    extra = set(request) - {"op", *FIELDS}
    if extra:
        return f"unexpected field(s) for add: {', '.join(sorted(map(str, extra)))[:200]}"
    deps = request.get("depends_on", [])
    if not (
        all(isinstance(request.get(k, ""), str) for k in ("id", "prompt", "kind"))
        and isinstance(deps, list)
        and all(isinstance(d, str) and len(d) <= 256 for d in deps)
    ):
        return "add needs id, prompt and kind as text and depends_on as a list of ids"
    return None


def owner(pid: int | None, leaders: Mapping[int, int | None], *, own_pid: int) -> int | None:
    """The leader pid (a key of ``leaders``: pid -> start time) whose process tree ``pid`` is
    in; None for a process that is no attempt's (this host itself, a stranger)."""
    for _ in range(MAX_ANCESTRY):
        if pid is None or pid <= 1 or pid == own_pid:
            return None
        if pid in leaders and process_start_time(pid) == leaders[pid]:
            return pid
        fields = stat_fields(pid)
        if len(fields) < 2:
            return None
        pid = int(fields[1])
    return None


def _peer_pid(sock: socket.socket | None) -> int | None:
    if sock is None:
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    pid = struct.unpack("3i", creds)[0]
    return pid if pid > 0 else None


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "code": 2, "error": f"error: {message}"}


async def _answer(line: bytes, pid: int | None, relay: Relay) -> dict[str, Any]:
    if len(line) >= MAX_REQUEST or not line.endswith(b"\n"):
        return _error(f"a request is one JSON line of less than {MAX_REQUEST} bytes")
    try:
        request = json.loads(line)
    except ValueError:
        return _error("a request is one line of JSON")
    why = problem(request)
    if why is not None:
        return _error(why)
    fields = {k: v for k, v in request.items() if k != "op"}
    answer = await relay(pid, fields) if pid is not None else None
    if answer is None:
        why = "this process belongs to no running agent of the run (it left its agent)"
        return {"ok": False, "refused": {"rule": "not-an-agent", "message": why, "hint": ""}}
    return answer


@contextlib.asynccontextmanager
async def open_ask_server(path: Path, relay: Relay) -> Any:
    """Serve ``path`` (a new socket, this user's only) while the block runs."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT):
                line = await reader.readline()
        except (TimeoutError, ValueError, ConnectionError):
            line = b""
        try:
            answer = await _answer(line, _peer_pid(writer.get_extra_info("socket")), relay)
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_unix_server(serve, path=str(path), limit=MAX_REQUEST + 1)
    os.chmod(path, 0o600)
    try:
        yield server
    finally:
        server.close()
        await server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
