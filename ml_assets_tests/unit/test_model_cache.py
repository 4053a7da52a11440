"""The Serve replica's model cache: least recently used out beyond a count and a byte bound."""

from __future__ import annotations

import asyncio

import pytest

from ml_assets.serving.model_cache import ModelCache
from ml_assets.settings import load_settings


class Loader:
    """Loads "name" as ("model-name", size[name]); counts loads; fails names in `broken`."""

    def __init__(self, sizes: dict[str, int], delay_s: float = 0.0) -> None:
        self.sizes, self.delay_s = sizes, delay_s
        self.loaded: list[str] = []
        self.broken: set[str] = set()

    async def __call__(self, model_id: str) -> tuple[str, int]:
        await asyncio.sleep(self.delay_s)
        if model_id in self.broken:
            raise OSError(f"cannot read {model_id}")
        self.loaded.append(model_id)
        return f"model-{model_id}", self.sizes[model_id]


def run(cache: ModelCache, ids: list[str]) -> list[str]:
    async def each() -> list[str]:
        return [await cache.get(i) for i in ids]

    return asyncio.run(each())


def test_the_count_bound_drops_the_least_recently_used():
    loader = Loader(dict.fromkeys("abc", 10))
    cache = ModelCache(loader, max_models=2)
    assert run(cache, ["a", "b", "a", "c", "a", "b"]) == [f"model-{i}" for i in "abacab"]
    # c evicted b (a was used after b), b evicted c
    assert loader.loaded == ["a", "b", "c", "b"]
    stats = cache.stats()
    assert (stats["models"], stats["bytes"]) == (["a", "b"], 20)
    assert (stats["hits"], stats["misses"], stats["loads"], stats["evictions"]) == (2, 4, 4, 2)


def test_the_byte_bound_drops_until_under_it_and_a_model_over_it_alone_still_serves():
    loader = Loader({"a": 40, "b": 40, "c": 50, "huge": 500})
    cache = ModelCache(loader, max_models=10, max_bytes=100)
    run(cache, ["a", "b"])
    assert cache.stats()["bytes"] == 80
    run(cache, ["a", "c"])  # 130 > 100: b, the least recently used, goes
    assert (cache.stats()["models"], cache.stats()["bytes"]) == (["a", "c"], 90)
    assert run(cache, ["huge"]) == ["model-huge"]
    assert (cache.stats()["models"], cache.stats()["bytes"]) == (["huge"], 500)
    assert run(cache, ["huge"]) == ["model-huge"] and loader.loaded.count("huge") == 1
    run(cache, ["a"])  # the huge one goes for the next
    assert (cache.stats()["models"], cache.stats()["evictions"]) == (["a"], 4)


def test_concurrent_requests_for_one_model_load_it_once():
    loader = Loader({"a": 1, "b": 1}, delay_s=0.05)
    cache = ModelCache(loader, max_models=2)

    async def many() -> list[str]:
        return await asyncio.gather(*(cache.get(i) for i in ["a", "b"] * 8))

    assert asyncio.run(many()) == ["model-a", "model-b"] * 8
    assert sorted(loader.loaded) == ["a", "b"]
    assert (cache.stats()["misses"], cache.stats()["loads"]) == (16, 2)


def test_a_failed_load_is_raised_to_its_callers_not_cached_and_retried():
    loader = Loader({"a": 1, "b": 1}, delay_s=0.01)
    loader.broken.add("b")
    cache = ModelCache(loader, max_models=2)

    async def both() -> list:
        return await asyncio.gather(cache.get("b"), cache.get("b"), cache.get("a"),
                                    return_exceptions=True)

    first, second, fine = asyncio.run(both())
    assert isinstance(first, OSError) and isinstance(second, OSError) and fine == "model-a"
    assert "b" not in cache and cache.stats()["failures"] == 1
    loader.broken.clear()
    assert run(cache, ["b"]) == ["model-b"] and cache.stats()["models"] == ["a", "b"]


def test_a_caller_that_goes_away_does_not_cancel_the_load_others_wait_for():
    loader = Loader({"a": 1}, delay_s=0.05)
    cache = ModelCache(loader, max_models=1)

    async def cancel_one() -> str:
        gone = asyncio.create_task(cache.get("a"))
        waiting = asyncio.create_task(cache.get("a"))
        await asyncio.sleep(0.01)
        gone.cancel()
        return await waiting

    assert asyncio.run(cancel_one()) == "model-a" and loader.loaded == ["a"]


def test_bounds_must_be_positive():
    with pytest.raises(ValueError, match="max_models"):
        ModelCache(Loader({}), max_models=0)
    with pytest.raises(ValueError, match="max_bytes"):
        ModelCache(Loader({}), max_models=1, max_bytes=0)


def test_settings_name_the_variable_of_a_bad_cache_bound():
    settings = load_settings({"ML_ASSETS_SERVE_MODELS_PER_REPLICA": "128",
                              "ML_ASSETS_SERVE_MODEL_CACHE_MB": "0.5"})
    assert (settings.serve_models_per_replica, settings.serve_model_cache_mb) == (128, 0.5)
    assert load_settings({"ML_ASSETS_SERVE_MODEL_CACHE_MB": "none"}).serve_model_cache_mb is None
    for value in ("0", "-3", "many", ""):
        with pytest.raises(ValueError, match=f"ML_ASSETS_SERVE_MODELS_PER_REPLICA={value!r}"):
            load_settings({"ML_ASSETS_SERVE_MODELS_PER_REPLICA": value})
    for value in ("0", "-1", "lots", "inf", "nan"):
        with pytest.raises(ValueError, match=f"ML_ASSETS_SERVE_MODEL_CACHE_MB={value!r}"):
            load_settings({"ML_ASSETS_SERVE_MODEL_CACHE_MB": value})
