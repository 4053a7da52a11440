"""The LLM gateway: the tenant route in front of each tenant's vLLM server, OpenAI-compatible.

    POST /v1/{tenant}/llm/completions        POST /v1/{tenant}/llm/chat/completions

The caller's key (predict role) is checked before the body is read; the body is checked
(llm_request.py) and forwarded, `model` set to the tenant's served version, to the tenant's own
vLLM server only (llm/routes.py); answers stream back as they come (SSE). Every request of a
known tenant is logged (llm_log.py) with latency, time to first token, tokens/s and its status.
A plain Starlette process: `python -m ml_assets.serving.llm_gateway CONFIG --port P`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ml_assets.access.guard import AccessDenied, authorize
from ml_assets.access.keys import REPLICA_CACHE_S, KeyStore, Role
from ml_assets.access.rate_limit import RateLimiter
from ml_assets.data.object_store import ObjectStoreClient
from ml_assets.llm.routes import LlmRoute, RouteTable
from ml_assets.serving import llm_log
from ml_assets.serving.llm_request import llm_target, prompt_chars, validate
from ml_assets.serving.prediction_log import PRODUCTION_ROUTE
from ml_assets.serving.request import RequestError, decode_json, refuse_oversized
from ml_assets.serving.routing import VERSION_HEADER
from ml_assets.tenants import TENANT_PATTERN, Tenant

logger = logging.getLogger("ml_assets.llm_gateway")


@dataclass(frozen=True)
class GatewayConfig:
    keys_path: str
    routes_path: str
    object_store: dict  # ObjectStoreClient's fields: where the tenants' logs go
    rate_limit_per_minute: int = 600_000
    log_flush_s: float = 1.0
    upstream_timeout_s: float = 300.0


class _Exchange:
    """What one request did, filled in as it goes and logged once at the end."""

    def __init__(self, tenant: str | None) -> None:
        self.started = time.perf_counter()
        self.tenant, self.endpoint, self.version = tenant, None, None
        self.stream, self.prompt_chars = False, None
        self.first_token: float | None = None
        self.usage: dict = {}

    def record(self, status: int, response_chars: int, error: str | None) -> llm_log.LlmRecord:
        now = time.perf_counter()
        latency = (now - self.started) * 1000
        ttft = ((self.first_token or now) - self.started) * 1000 if status == 200 else None
        completion = self.usage.get("completion_tokens")
        generating_s = now - (self.first_token if self.stream and self.first_token
                              else self.started)
        rate = completion / generating_s if completion and generating_s > 0 else None
        return llm_log.LlmRecord(
            tenant=self.tenant, endpoint=self.endpoint, model_version=self.version,
            route=PRODUCTION_ROUTE, stream=self.stream, status=status, latency_ms=latency,
            ttft_ms=ttft, prompt_tokens=self.usage.get("prompt_tokens"),
            completion_tokens=completion, tokens_per_s=rate, prompt_chars=self.prompt_chars,
            response_chars=response_chars, error=error)


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    # OpenAI's error shape, so OpenAI clients show the message
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}},
                        status_code=status, headers=headers)


def _has_token(chunk: dict) -> bool:
    for choice in chunk.get("choices") or ():
        if choice.get("text") or (choice.get("delta") or {}).get("content"):
            return True
    return False


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.keys = KeyStore(Path(config.keys_path), cache_s=REPLICA_CACHE_S)
        self.limiter = RateLimiter(config.rate_limit_per_minute)
        self.routes = RouteTable(Path(config.routes_path))
        self.store = ObjectStoreClient(**config.object_store)
        self.pending: dict[str, list[llm_log.LlmRecord]] = {}
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(config.upstream_timeout_s, connect=5.0),
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=64))

    def log(self, exchange: _Exchange, status: int, response_chars: int,
            error: str | None = None) -> None:
        if exchange.tenant is not None:
            self.pending.setdefault(exchange.tenant, []).append(
                exchange.record(status, response_chars, error))

    async def flush(self) -> int:
        """Write the buffered records, one parquet file per tenant; how many."""
        pending, self.pending = self.pending, {}
        written = 0
        for tenant, records in pending.items():
            try:
                await asyncio.to_thread(llm_log.write, self.store, Tenant(tenant), records)
                written += len(records)
            except Exception:  # noqa: BLE001 - kept, written next time
                self.pending.setdefault(tenant, [])[:0] = records
                logger.exception("LLM log flush failed for %s", tenant)
        return written

    async def flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.config.log_flush_s)
            await self.flush()

    async def handle(self, request: Request) -> Response:
        exchange = _Exchange(None)
        try:
            tenant, endpoint = llm_target(request.url.path)
            if not TENANT_PATTERN.fullmatch(tenant):
                raise RequestError(404, f"unknown tenant {tenant[:40]!r}")
            route = self.routes.get(tenant)
            if route is not None:  # a known tenant: its refusals are logged too
                exchange.tenant, exchange.version = tenant, route.version
            exchange.endpoint = endpoint
            try:  # before the body: no work for a caller without the tenant's key
                authorize(self.keys, self.limiter, request.headers.get("authorization"),
                          tenant, Role.predict)
            except AccessDenied as exc:
                retry = {"retry-after": str(exc.retry_after_s)} if exc.retry_after_s else None
                self.log(exchange, exc.status, 0, str(exc))
                return _error(exc.status, str(exc), retry)
            if route is None:
                raise RequestError(404, f"unknown tenant {tenant!r}: no LLM endpoint deployed")
            await refuse_oversized(request)
            body = decode_json(await request.body())
            forward = validate(body, endpoint, route.model, route.served_model,
                               route.max_model_len)
            exchange.prompt_chars = prompt_chars(forward)
            exchange.stream = bool(forward.get("stream"))
            if exchange.stream:
                return await self._stream(route, endpoint, forward, exchange)
            return await self._plain(route, endpoint, forward, exchange)
        except RequestError as exc:
            self.log(exchange, exc.status, 0, str(exc))
            return _error(exc.status, str(exc))

    async def _plain(self, route: LlmRoute, endpoint: str, body: dict,
                     exchange: _Exchange) -> Response:
        try:
            answer = await self.http.post(f"{route.url}/v1/{endpoint}", json=body)
        except httpx.HTTPError as exc:
            raise RequestError(503, f"the tenant's LLM server is unreachable: {exc!r}") from None
        content = answer.content
        status = answer.status_code if answer.status_code < 500 else 502
        error = None
        if answer.status_code == 200:
            with contextlib.suppress(ValueError, AttributeError):
                exchange.usage = json.loads(content).get("usage") or {}
        else:
            error = content[:500].decode(errors="replace")
        self.log(exchange, status, len(content), error)
        return Response(content, status_code=status, media_type="application/json",
                        headers={VERSION_HEADER: route.version})

    async def _stream(self, route: LlmRoute, endpoint: str, body: dict,
                      exchange: _Exchange) -> Response:
        options = body.get("stream_options") or {}
        wants_usage = bool(options.get("include_usage"))
        # the usage chunk gives tokens/s; dropped again below when the caller did not ask
        body = {**body, "stream_options": {**options, "include_usage": True}}
        request = self.http.build_request("POST", f"{route.url}/v1/{endpoint}", json=body)
        try:
            upstream = await self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise RequestError(503, f"the tenant's LLM server is unreachable: {exc!r}") from None
        if upstream.status_code != 200:  # refused before streaming: answered as a plain error
            content = await upstream.aread()
            await upstream.aclose()
            status = upstream.status_code if upstream.status_code < 500 else 502
            self.log(exchange, status, len(content), content[:500].decode(errors="replace"))
            return Response(content, status_code=status, media_type="application/json",
                            headers={VERSION_HEADER: route.version})

        async def events():
            sent, error = 0, "client disconnected"
            try:
                async for line in upstream.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload != "[DONE]":
                        chunk = json.loads(payload)
                        if exchange.first_token is None and _has_token(chunk):
                            exchange.first_token = time.perf_counter()
                        if chunk.get("usage"):
                            exchange.usage = chunk["usage"]
                            if not chunk.get("choices") and not wants_usage:
                                continue
                    event = f"data: {payload}\n\n".encode()
                    sent += len(event)
                    yield event
                error = None
            except (httpx.HTTPError, ValueError) as exc:  # ValueError: a chunk not JSON
                error = f"upstream stream broke: {exc!r}"
            finally:
                self.log(exchange, 200, sent, error)  # first: the close below may be cancelled
                await upstream.aclose()

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={VERSION_HEADER: route.version,
                                          "cache-control": "no-cache"})


def create_gateway(config: GatewayConfig) -> Starlette:
    gateway = Gateway(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        flusher = asyncio.create_task(gateway.flush_periodically())
        try:
            yield
        finally:
            flusher.cancel()
            await gateway.flush()
            await gateway.http.aclose()

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[
        Route("/healthz", health, methods=["GET"]),
        Route("/v1/{path:path}", gateway.handle, methods=["POST"]),
    ], lifespan=lifespan)
    app.state.gateway = gateway
    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="JSON of GatewayConfig")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    args = parser.parse_args()
    config = GatewayConfig(**json.loads(args.config.read_text()))
    uvicorn.run(create_gateway(config), host=args.host, port=args.port, log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()
