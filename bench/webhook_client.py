"""Why the service has its own HTTP/1.1 client (src/rpa_gateway/http_client.py): CPU
per POST of the service's webhook Sender against the same POST through an aiohttp
ClientSession (the library the service used for the platform before), both to one local aiohttp
receiver answering 204, 8 at a time on kept-alive connections, alternating rounds in one
invocation (this machine's speed drifts), median of ``--rounds``.

    .venv/bin/python bench/webhook_client.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import time

import aiohttp
import uvloop
from aiohttp import web

from load import RESULTS, free_port, gateway_source
from rpa_gateway.webhooks.sender import Sender

BODY = b'{"type":"execution.succeeded","timestamp":"2026-01-01T00:00:00Z","data":{}}' * 8
HEADERS = {"webhook-id": "msg_bench", "webhook-timestamp": "0", "webhook-signature": "v1,x"}


def receiver(port: int) -> None:
    async def receive(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


class AiohttpSender:
    """A POST as the aiohttp client makes it, with the settings a webhook needs."""

    def __init__(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=10), cookie_jar=aiohttp.DummyCookieJar()
        )

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> None:
        async with self._session.post(
            url, data=body, headers=headers, allow_redirects=False
        ) as reply:
            await reply.content.read(64 * 1024)

    async def aclose(self) -> None:
        await self._session.close()


async def cpu_us_per_post(client: Sender | AiohttpSender, url: str, posts: int) -> float:
    gate = asyncio.Semaphore(8)

    async def one() -> None:
        async with gate:
            await client.send(url, HEADERS, BODY)

    began = time.process_time()
    await asyncio.gather(*(one() for _ in range(posts)))
    return (time.process_time() - began) / posts * 1e6


async def compare(port: int, rounds: int, posts: int) -> None:
    url = f"http://127.0.0.1:{port}/hook"
    ours = Sender(timeout=10, allow_private=True, user_agent="rpa-gateway/bench")
    theirs = AiohttpSender()
    await cpu_us_per_post(ours, url, 300)
    await cpu_us_per_post(theirs, url, 300)
    mine, aio = [], []
    for _ in range(rounds):
        mine.append(await cpu_us_per_post(ours, url, posts))
        aio.append(await cpu_us_per_post(theirs, url, posts))
    await ours.aclose()
    await theirs.aclose()
    ratio = statistics.median(mine) / statistics.median(aio)
    report = {
        "source": gateway_source(),
        "posts_per_round": posts,
        "sender_cpu_us_per_post": [round(x, 1) for x in mine],
        "aiohttp_cpu_us_per_post": [round(x, 1) for x in aio],
        "ratio_of_medians": round(ratio, 3),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "webhook_client.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"webhook Sender: {[round(x) for x in mine]} µs CPU per POST")
    print(f"aiohttp client: {[round(x) for x in aio]} µs CPU per POST")
    print(f"Sender / aiohttp: {ratio:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--posts", type=int, default=2000)
    args = parser.parse_args()
    port = free_port()
    server = multiprocessing.Process(target=receiver, args=(port,), daemon=True)
    server.start()
    time.sleep(1.0)
    try:
        uvloop.run(compare(port, args.rounds, args.posts))
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
