"""Which vLLM server answers each tenant's LLM route: one JSON file the `llm_endpoint` asset
writes (atomically) and the gateway re-reads when it changes. A tenant's entry names only its own
server, so the gateway has no way to send one tenant's request to another's model."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from ml_assets.tenants import validated_keys


@dataclass(frozen=True)
class LlmRoute:
    url: str  # the tenant's vLLM server, e.g. http://127.0.0.1:41234
    model: str  # the name callers use: {tenant}-llm
    version: str  # the Production version it serves
    max_model_len: int = 256  # the server's context length: max_tokens beyond it is refused
    pid: int | None = None  # the local process (None: a server this project did not start)

    @property
    def served_model(self) -> str:
        """The name vLLM answers with (its first --served-model-name): name and version."""
        return f"{self.model}:{self.version}"


def read_routes(path: Path) -> dict[str, LlmRoute]:
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}
    return {tenant: LlmRoute(**route) for tenant, route in validated_keys(raw).items()}


def set_route(path: Path, tenant: str, route: LlmRoute | None) -> None:
    """Write (or with None remove) one tenant's route; other tenants' entries are kept."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    routes = read_routes(path)
    if route is None:
        routes.pop(tenant, None)
    else:
        routes[tenant] = route
    partial = path.with_suffix(f".{os.getpid()}.partial")
    partial.write_text(json.dumps({t: asdict(r) for t, r in sorted(routes.items())}, indent=1))
    partial.replace(path)  # a reader sees the old table or the new one, never half of one


class RouteTable:
    """The routes file as the gateway sees it: re-read only when its mtime changes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._stamp: int | None = None
        self._routes: dict[str, LlmRoute] = {}
        self._lock = threading.Lock()

    def get(self, tenant: str) -> LlmRoute | None:
        try:
            stamp = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        if stamp != self._stamp:
            with self._lock:
                self._routes, self._stamp = read_routes(self.path), stamp
        return self._routes.get(tenant)
