"""A load generator for B11, run as a process of its own: streaming Messages API clients.

``python -m bench.loadgen --group URL FILE N [--group ...] --requests R`` starts, for every
group, N clients at once (all groups together); each sends R streamed requests one after
another (an agent's turns) to the group's URL, each client with its own key from FILE (one a
line, reused round-robin), and reads every answer to its end. It prints one JSON list, one
object per group: the wall time from the first request to its last byte, and each request's
latency (sent to last byte) and time to its first byte. Groups that run together share the
machine's load, so their figures compare side by side.

Being a process of its own, its CPU is not the measured process's: B11 runs the gateway in
the bench's process and compares the same load sent there and sent to the server directly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import aiohttp

BODY = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 256,
    "stream": True,
    "messages": [{"role": "user", "content": "Say something short."}],
}


async def client(
    session: aiohttp.ClientSession, url: str, key: str, requests: int, out: list[list[float]]
) -> None:
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    for _ in range(requests):
        sent = time.perf_counter()
        async with session.post(url + "/v1/messages", json=BODY, headers=headers) as resp:
            first = 0.0
            async for _chunk in resp.content.iter_any():
                if not first:
                    first = time.perf_counter()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}")
        done = time.perf_counter()
        out.append([done - sent, (first or done) - sent])


async def group(
    session: aiohttp.ClientSession, url: str, keys: list[str], clients: int, requests: int
) -> dict[str, object]:
    samples: list[list[float]] = []
    start = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for n in range(clients):
            tg.create_task(client(session, url, keys[n % len(keys)], requests, samples))
    wall = time.perf_counter() - start
    return {"wall": wall, "latency": [s[0] for s in samples], "first_byte": [s[1] for s in samples]}


async def main(groups: list[tuple[str, list[str], int]], requests: int) -> list[dict[str, object]]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        runs = (group(session, url, keys, n, requests) for url, keys, n in groups)
        return list(await asyncio.gather(*runs))


def run(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    p.add_argument(
        "--group", nargs=3, action="append", required=True, metavar=("URL", "TOKENS", "CLIENTS"),
        help="clients sending to URL with the keys in the file TOKENS (one a line)",
    )  # fmt: skip
    p.add_argument("--requests", type=int, default=5, help="sequential requests per client")
    args = p.parse_args(argv)
    groups = [(url, Path(tokens).read_text().split(), int(n)) for url, tokens, n in args.group]
    sys.stdout.write(json.dumps(asyncio.run(main(groups, args.requests))) + "\n")


if __name__ == "__main__":
    run()
