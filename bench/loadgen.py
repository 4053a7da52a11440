"""Closed-loop HTTP load: `concurrency` clients each send the next request when the last one
answered, for `duration` seconds. Run in its own process so it never shares the server's loop.

    python -m bench.loadgen URL CONCURRENCY DURATION_S   -> one JSON line on stdout
    python -m bench.loadgen --targets FILE CONCURRENCY DURATION_S

The API key of the URL's tenant comes from ML_ASSETS_KEY (sent as a bearer token). With
--targets, FILE holds [[url, key], ...] and each request goes to one of them, uniformly at random.
"""

import asyncio
import json
import os
import random
import sys
import time
import uuid

import aiohttp
import numpy as np

from ml_assets.schema import FEATURES


async def client(session, targets: list[tuple[str, dict]], end: float, latencies: list,
                 errors: list, pick: random.Random) -> None:
    row = dict.fromkeys(FEATURES, 1.0)
    while time.perf_counter() < end:
        url, headers = targets[0] if len(targets) == 1 else pick.choice(targets)
        body = {"rows": [row], "key": uuid.uuid4().hex}
        started = time.perf_counter()
        try:
            async with session.post(url, json=body, headers=headers) as response:
                await response.read()
                ok = response.status == 200
        except aiohttp.ClientError:
            ok = False
        (latencies if ok else errors).append((time.perf_counter() - started) * 1000)


async def load(targets: list[tuple[str, str | None]], concurrency: int,
               duration_s: float) -> dict:
    latencies: list[float] = []
    errors: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    with_keys = [(url, {"authorization": f"Bearer {key}"} if key else {})
                 for url, key in targets]
    picks = [random.Random(i) for i in range(concurrency)]
    async with aiohttp.ClientSession(connector=connector) as session:
        # warm-up: connections open, models loaded, caches hot
        await asyncio.gather(*(client(session, with_keys, time.perf_counter() + 1, [], [],
                                      picks[i]) for i in range(concurrency)))
        started = time.perf_counter()
        await asyncio.gather(*(client(session, with_keys, started + duration_s, latencies,
                                      errors, picks[i]) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) if latencies else (0, 0, 0)
    return {"concurrency": concurrency, "requests": len(latencies), "errors": len(errors),
            "rps": len(latencies) / elapsed, "p50_ms": float(p50), "p95_ms": float(p95),
            "p99_ms": float(p99)}


if __name__ == "__main__":
    if sys.argv[1] == "--targets":
        with open(sys.argv[2]) as file:
            targets = [(url, key) for url, key in json.load(file)]
        concurrency, duration = int(sys.argv[3]), float(sys.argv[4])
    else:
        targets = [(sys.argv[1], os.environ.get("ML_ASSETS_KEY"))]
        concurrency, duration = int(sys.argv[2]), float(sys.argv[3])
    print(json.dumps(asyncio.run(load(targets, concurrency, duration))))
