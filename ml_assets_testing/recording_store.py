"""A real object store (local or S3) that records what it listed and can run a step of another
process, or crash, at a chosen point: what the log's tests and benchmark observe it through."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import PrivateAttr

from ml_assets.data.object_store import ObjectStoreClient
from ml_assets.tenants import Tenant


class Crash(RuntimeError):
    """The process stopping at the injected point."""


class RecordingStore(ObjectStoreClient):
    """`listed`: the key prefixes of every listing, in order. `after_list` runs once after the
    next listing; `crash_deletes_after` makes `delete` remove that many keys, then raise Crash;
    `before_put` runs before each write (with the key)."""

    _listed: list[str] = PrivateAttr(default_factory=list)
    _after_list: Callable[[], None] | None = PrivateAttr(default=None)
    _crash_deletes_after: int | None = PrivateAttr(default=None)
    _before_put: Callable[[str], None] | None = PrivateAttr(default=None)

    @classmethod
    def like(cls, store: ObjectStoreClient) -> RecordingStore:
        return cls(**{name: getattr(store, name) for name in ObjectStoreClient.model_fields})

    @property
    def listed(self) -> list[str]:
        return self._listed

    def after_next_list(self, step: Callable[[], None] | None) -> None:
        self._after_list = step

    def crash_deletes_after(self, count: int | None) -> None:
        self._crash_deletes_after = count

    def before_put(self, step: Callable[[str], None] | None) -> None:
        self._before_put = step

    def list_sizes(self, tenant: Tenant, *parts: str) -> list[tuple[str, int]]:
        found = super().list_sizes(tenant, *parts)
        self._listed.append("/".join(parts))
        step, self._after_list = self._after_list, None
        if step:
            step()
        return found

    def list_dirs(self, tenant: Tenant, *parts: str) -> list[str]:
        self._listed.append("/".join(parts) + " (folders)")
        return super().list_dirs(tenant, *parts)

    def delete(self, tenant: Tenant, keys: list[str]) -> None:
        if self._crash_deletes_after is None:
            return super().delete(tenant, keys)
        super().delete(tenant, keys[:self._crash_deletes_after])
        raise Crash(f"stopped after deleting {self._crash_deletes_after} of {len(keys)} files")

    def put_bytes(self, tenant: Tenant, key: str, data: bytes) -> str:
        if self._before_put:
            self._before_put(key)
        return super().put_bytes(tenant, key, data)
