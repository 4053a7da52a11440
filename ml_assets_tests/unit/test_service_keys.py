"""API keys (hashed at rest, bound to a tenant and role), the per-key rate limit, the CLI."""

from __future__ import annotations

import hashlib
import shutil

import dagster as dg
import pytest

from ml_assets.access.keys import TOKEN_PATTERN, KeyStore, Role
from ml_assets.access.rate_limit import RateLimiter
from ml_assets.cli import main
from ml_assets.settings import PROJECT_ROOT, load_settings
from ml_assets.tenants import InvalidTenantError, Tenant, add_tenant


def secret_of(token: str) -> str:
    return TOKEN_PATTERN.fullmatch(token).group(2)


def test_a_key_verifies_with_its_tenant_and_role_and_only_its_hash_is_stored(tmp_path):
    keys = KeyStore(tmp_path / "keys.db")
    key, token = keys.create(Tenant("acme"), Role.trainer)
    secret = secret_of(token)
    assert keys.verify(token) == key
    assert (key.tenant.key, key.role) == ("acme", Role.trainer)
    keys.close()
    stored = (tmp_path / "keys.db").read_bytes()
    assert secret.encode() not in stored and token.encode() not in stored
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in stored


def test_wrong_secrets_unknown_ids_garbage_and_revoked_keys_do_not_verify(tmp_path):
    keys = KeyStore(tmp_path / "keys.db")
    key, token = keys.create(Tenant("acme"), Role.viewer)
    other, other_token = keys.create(Tenant("globex"), Role.viewer)
    swapped = f"mla_{key.id}_{secret_of(other_token)}"  # acme's id, globex's secret
    for bad in (swapped, f"mla_{'0' * 12}_{secret_of(token)}", "", "mla_", token + "x",
                token.upper(), "Bearer " + token):
        assert keys.verify(bad) is None, bad
    assert keys.revoke(key.id) and not keys.revoke(key.id)
    assert keys.verify(token) is None
    assert [k.id for k in keys.list()] == [other.id]


def test_roles_are_ordered():
    assert Role.viewer < Role.trainer < Role.promoter


def test_rate_limit_bursts_to_the_limit_then_refills_per_key():
    now = [0.0]
    limiter = RateLimiter(per_minute=2, clock=lambda: now[0])
    assert [limiter.acquire("a"), limiter.acquire("a")] == [0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(30.0)  # one token every 30 s
    assert limiter.acquire("b") == 0.0  # another key has its own bucket
    now[0] = 30.0
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0
    with pytest.raises(ValueError, match="at least 1 request per minute"):
        RateLimiter(per_minute=0)


@pytest.fixture
def cli_state(tmp_path, monkeypatch):
    monkeypatch.setenv("ML_ASSETS_STATE_DIR", str(tmp_path))
    settings = load_settings({"ML_ASSETS_STATE_DIR": str(tmp_path)})
    settings.dagster_home.mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "dagster.yaml", settings.dagster_home)
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        add_tenant(instance, "acme")
    return settings


def test_cli_creates_a_key_for_a_registered_tenant_and_prints_it_once(cli_state, capsys):
    assert main(["api-key", "create", "acme", "--role", "trainer"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    key = KeyStore(cli_state.api_keys_path).verify(token)
    assert (key.tenant.key, key.role) == ("acme", Role.trainer)
    assert main(["api-key", "list"]) == 0
    listed = capsys.readouterr().out
    assert key.id in listed and "trainer" in listed and secret_of(token) not in listed
    assert main(["api-key", "revoke", key.id]) == 0
    assert KeyStore(cli_state.api_keys_path).verify(token) is None


def test_cli_refuses_keys_for_unregistered_or_invalid_tenants(cli_state, capsys):
    assert main(["api-key", "create", "globex"]) == 2
    assert "tenant 'globex' is not registered" in capsys.readouterr().err
    assert main(["api-key", "create", "Bad_Tenant"]) == 2
    assert "invalid tenant 'Bad_Tenant'" in capsys.readouterr().err
    assert KeyStore(cli_state.api_keys_path).list() == []
    with pytest.raises(InvalidTenantError):
        Tenant("Bad_Tenant")


def test_a_cached_key_is_trusted_for_its_seconds_then_checked_again(tmp_path):
    import time

    keys = KeyStore(tmp_path / "keys.db", cache_s=0.2)
    key, token = keys.create(Tenant("acme"), Role.predict)
    assert keys.verify(token) == key
    keys.revoke(key.id)
    assert keys.verify(token) == key  # within the cache's seconds
    time.sleep(0.3)
    assert keys.verify(token) is None
    assert keys.verify(token + "x") is None and keys.verify(token + "x") is None
    assert token + "x" not in keys._verified  # unknown tokens are never kept
