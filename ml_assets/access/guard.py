"""One check of a caller's key for a tenant's route: known key (401), the path's tenant and a
high enough role (403), within its rate limit (429). The Serve replica runs it before it reads
a byte of the body."""

from __future__ import annotations

import math

from ml_assets.access.keys import ApiKey, KeyStore, Role
from ml_assets.access.rate_limit import RateLimiter


class AccessDenied(Exception):
    """A refused caller: the HTTP status, a message, and for 429 the seconds to wait."""

    def __init__(self, status: int, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status, self.retry_after_s = status, retry_after_s


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def authorize(keys: KeyStore, limiter: RateLimiter, authorization: str | None, tenant: str,
              role: Role) -> ApiKey:
    """The caller's key if it may act as `role` on `tenant` now; AccessDenied otherwise."""
    token = bearer_token(authorization)
    key = keys.verify(token) if token else None
    if key is None:
        raise AccessDenied(401, "missing or invalid API key: send 'authorization: Bearer <key>' "
                                "(`ml-assets api-key create TENANT --role predict`)")
    if key.tenant.key != tenant:
        raise AccessDenied(403, "this API key is not for the tenant in the path")
    if key.role < role:
        raise AccessDenied(403, f"role {key.role.name} may not do this: needs {role.name}")
    wait = limiter.acquire(key.id)
    if wait:
        raise AccessDenied(429, "rate limit reached for this API key", math.ceil(wait))
    return key
