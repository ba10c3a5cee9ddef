"""Simulated browsers for B12: ``python bench/webclients.py URL N``.

Opens N WebSockets to the page's feed as the page does (whole state once, then patches of
the rows that changed), prints ``connected``, and records for every task that ends how long
after its recorded end each client first got a message showing it. When stdin
closes it prints the latencies (seconds) as one JSON list and exits.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time


async def client(url: str, latencies: list[float], stop: asyncio.Event) -> None:
    import aiohttp

    ws_url = url.replace("http://", "ws://").replace("/?token=", "/ws?patches=1&token=")
    seen: set[str] = set()
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url, max_msg_size=0) as ws:
        while not stop.is_set():
            try:
                msg = await asyncio.wait_for(ws.receive(), 0.2)
            except TimeoutError:
                continue
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            now = time.time()
            state = json.loads(msg.data)
            for row in state.get("tasks", ()):
                ended = row.get("ended")
                if ended and row["id"] not in seen:
                    seen.add(row["id"])
                    latencies.append(max(now - ended, 0.0))


async def main(url: str, n: int) -> None:
    latencies: list[float] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    async with asyncio.TaskGroup() as tg:
        for _ in range(n):
            tg.create_task(client(url, latencies, stop))
        await asyncio.sleep(0.5)
        print("connected", flush=True)
        await loop.run_in_executor(None, sys.stdin.read)  # until the bench closes stdin
        stop.set()
    print(json.dumps(latencies), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
