"""The Serve replica's loaded models: least recently used first out, bounded by how many and by
their measured bytes.

Serve's `@serve.multiplexed` bounds a count fixed where the class is defined, knows nothing of a
model's size and loads one model at a time under one lock; its other service, telling the router
which replica holds a caller-named model id, is unused here (the replica picks the version from
the route, not from the caller). So the replica keeps its own cache.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

Loader = Callable[[str], Awaitable[tuple[Any, int]]]


@dataclass
class _Entry:
    model: Any
    nbytes: int


class ModelCache:
    """`get(model_id)`: the loaded model, or `load(model_id)`'s (model, bytes) once, however
    many ask at the same time; then the least recently used are dropped while more than
    `max_models` are held or their bytes exceed `max_bytes`. The model just loaded is never
    dropped, so one bigger than `max_bytes` alone still loads and serves. A failed load is not
    cached: the next request tries again."""

    def __init__(self, load: Loader, max_models: int, max_bytes: int | None = None) -> None:
        if max_models < 1:
            raise ValueError(f"max_models must be at least 1, got {max_models}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be positive or None, got {max_bytes}")
        self._load = load
        self.max_models = max_models
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._loading: dict[str, asyncio.Task] = {}
        self.nbytes = 0
        self.hits = self.misses = self.loads = self.evictions = self.failures = 0

    def __contains__(self, model_id: str) -> bool:
        return model_id in self._entries

    async def get(self, model_id: str) -> Any:
        entry = self._entries.get(model_id)
        if entry is not None:
            self.hits += 1
            self._entries.move_to_end(model_id)
            return entry.model
        self.misses += 1
        loading = self._loading.get(model_id)
        if loading is None:
            # a task of its own: a caller that goes away does not cancel the others' load
            loading = self._loading[model_id] = asyncio.create_task(self._load_and_keep(model_id))
            loading.add_done_callback(_retrieve)
        return await asyncio.shield(loading)

    async def _load_and_keep(self, model_id: str) -> Any:
        try:
            model, nbytes = await self._load(model_id)
        except Exception:
            self.failures += 1
            raise
        finally:
            del self._loading[model_id]
        self.loads += 1
        self._entries[model_id] = _Entry(model, nbytes)
        self.nbytes += nbytes
        self._evict()
        return model

    def _evict(self) -> None:
        while len(self._entries) > 1 and (
                len(self._entries) > self.max_models
                or (self.max_bytes is not None and self.nbytes > self.max_bytes)):
            _, dropped = self._entries.popitem(last=False)
            self.nbytes -= dropped.nbytes
            self.evictions += 1

    def stats(self) -> dict[str, Any]:
        """What is loaded (least recently used first), its bytes, the bounds and the counts."""
        return {"models": list(self._entries), "loaded": len(self._entries),
                "bytes": self.nbytes, "max_models": self.max_models, "max_bytes": self.max_bytes,
                "hits": self.hits, "misses": self.misses, "loads": self.loads,
                "evictions": self.evictions, "failures": self.failures}


def _retrieve(task: asyncio.Task) -> None:
    """Marks a failed load's error seen: every caller may have gone before it ended."""
    if not task.cancelled():
        task.exception()
