"""Closed-loop HTTP load: `concurrency` clients each send the next request when the last one
answered, for `duration` seconds. Run in its own process so it never shares the server's loop.

    python -m bench.loadgen URL CONCURRENCY DURATION_S   -> one JSON line on stdout

The API key of the URL's tenant comes from ML_ASSETS_KEY (sent as a bearer token).
"""

import asyncio
import json
import os
import sys
import time
import uuid

import aiohttp
import numpy as np

from ml_assets.schema import FEATURES


async def client(session, url: str, end: float, latencies: list, errors: list) -> None:
    row = dict.fromkeys(FEATURES, 1.0)
    while time.perf_counter() < end:
        body = {"rows": [row], "key": uuid.uuid4().hex}
        started = time.perf_counter()
        try:
            async with session.post(url, json=body) as response:
                await response.read()
                ok = response.status == 200
        except aiohttp.ClientError:
            ok = False
        (latencies if ok else errors).append((time.perf_counter() - started) * 1000)


async def load(url: str, concurrency: int, duration_s: float) -> dict:
    latencies: list[float] = []
    errors: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    key = os.environ.get("ML_ASSETS_KEY")
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        # warm-up: connections open, models loaded, caches hot
        await asyncio.gather(*(client(session, url, time.perf_counter() + 1, [], [])
                               for _ in range(concurrency)))
        started = time.perf_counter()
        await asyncio.gather(*(client(session, url, started + duration_s, latencies, errors)
                               for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) if latencies else (0, 0, 0)
    return {"concurrency": concurrency, "requests": len(latencies), "errors": len(errors),
            "rps": len(latencies) / elapsed, "p50_ms": float(p50), "p95_ms": float(p95),
            "p99_ms": float(p99)}


if __name__ == "__main__":
    url, concurrency, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    print(json.dumps(asyncio.run(load(url, concurrency, duration))))
