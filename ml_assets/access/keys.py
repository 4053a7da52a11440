"""API keys: each bound to one tenant and one role, stored as a SHA-256 of the secret only.

A token is `mla_<key id>_<secret>`; the secret is 32 random bytes, so a plain SHA-256 (no slow
hash) cannot be brute-forced, and the id lets a lookup find the one row to compare against.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path

from ml_assets.tenants import Tenant

# how long the Serve replica trusts a verified key: a sqlite lookup and a hash per request cost
# ~40 us of its CPU (bench/serving.py); a revoked key stops working within this
REPLICA_CACHE_S = 5.0
TOKEN_PATTERN = re.compile(r"^mla_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")

_SCHEMA = """CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, role TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL, created_at TEXT NOT NULL, revoked_at TEXT)"""


class Role(IntEnum):
    """What a key may do; each role may do what the ones below it may."""

    predict = 1   # the tenant's production prediction route
    staging = 2   # + its pre-production route (the Staging version)
    viewer = 3    # + read runs, models, history
    trainer = 4   # + launch experiments
    promoter = 5  # + promote and roll back model versions


@dataclass(frozen=True)
class ApiKey:
    id: str
    tenant: Tenant
    role: Role
    created_at: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    """The API keys of one state folder (sqlite), shared by the server's threads.

    `cache_s` > 0 keeps a verified token's key that many seconds (the Serve replica: a
    revocation then takes effect within them); unknown or revoked tokens are never cached."""

    def __init__(self, path: Path, cache_s: float = 0.0) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._cache_s = cache_s
        self._verified: dict[str, tuple[ApiKey, float]] = {}
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
        with self._lock, self._conn:
            self._conn.execute(_SCHEMA)

    def create(self, tenant: Tenant, role: Role) -> tuple[ApiKey, str]:
        """A new key and its token; the token is not stored and cannot be shown again."""
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        created = datetime.now(UTC).isoformat(timespec="seconds")
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT INTO api_keys (id, tenant, role, secret_sha256, created_at) "
                "VALUES (?, ?, ?, ?, ?)", (key_id, tenant.key, role.name, _digest(secret), created))
        return ApiKey(key_id, tenant, role, created), f"mla_{key_id}_{secret}"

    def verify(self, token: str) -> ApiKey | None:
        """The key the token belongs to, or None (malformed, unknown, revoked, wrong secret)."""
        cached = self._verified.get(token)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        key = self._lookup(token)
        if key is not None and self._cache_s:
            if len(self._verified) > 10_000:  # bounded: tokens are few, attackers' unknown
                self._verified.clear()
            self._verified[token] = (key, time.monotonic() + self._cache_s)
        return key

    def _lookup(self, token: str) -> ApiKey | None:
        match = TOKEN_PATTERN.fullmatch(token)
        if match is None:
            return None
        key_id, secret = match.groups()
        with self._lock:
            row = self._conn.execute(
                "SELECT tenant, role, secret_sha256, created_at FROM api_keys "
                "WHERE id = ? AND revoked_at IS NULL", (key_id,)).fetchone()
        if row is None:
            return None
        tenant, role, stored, created = row
        if not hmac.compare_digest(_digest(secret), stored):
            return None
        return ApiKey(key_id, Tenant(tenant), Role[role], created)

    def revoke(self, key_id: str) -> bool:
        with self._lock, self._conn:
            cursor = self._conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (datetime.now(UTC).isoformat(timespec="seconds"), key_id))
        return cursor.rowcount == 1

    def list(self) -> list[ApiKey]:
        """Active keys (never their secrets)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, tenant, role, created_at FROM api_keys WHERE revoked_at IS NULL "
                "ORDER BY created_at, id").fetchall()
        return [ApiKey(key_id, Tenant(tenant), Role[role], created)
                for key_id, tenant, role, created in rows]

    def close(self) -> None:
        self._conn.close()


@contextmanager
def temporary_token(path: Path, tenant: Tenant, role: Role) -> Iterator[str]:
    """A key of the tenant for the platform's own requests (smoke test, probe), revoked when
    they are done."""
    keys = KeyStore(path)
    key, token = keys.create(tenant, role)
    try:
        yield token
    finally:
        keys.revoke(key.id)
        keys.close()
