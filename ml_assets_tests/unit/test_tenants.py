"""Tenant keys, the names derived from them, and registering them as partitions."""

import dagster as dg
import pytest

from ml_assets.tenants import InvalidTenantError, Tenant, add_tenant, registered_tenants


@pytest.mark.parametrize("key", ["acme", "a1", "big-co-2", "a" * 40])
def test_valid_keys(key):
    assert Tenant(key).key == key


@pytest.mark.parametrize("key", ["", "a", "Acme", "1acme", "acme_co", "acme/../b", "a" * 41,
                                 "acme ", "-acme", "qa-", "a-"])
def test_invalid_keys_are_refused_naming_the_key(key):
    with pytest.raises(InvalidTenantError, match="invalid tenant"):
        Tenant(key)


def test_derived_names_are_distinct_per_tenant():
    a, b = Tenant("acme"), Tenant("globex")
    for name in ("experiment_name", "registered_model_name", "prefix", "route_prefix"):
        assert getattr(a, name) != getattr(b, name)
        assert "acme" in getattr(a, name).replace("_", "-")
    churn, spend = Tenant("acme"), Tenant("acme", "spend")
    assert churn.registered_model_name == "acme-churn"
    assert spend.registered_model_name == "acme-spend" and spend.prefix == churn.prefix


def test_add_tenant_is_idempotent_and_validates():
    with dg.instance_for_test() as instance:
        add_tenant(instance, "acme")
        add_tenant(instance, "acme")
        assert registered_tenants(instance) == ["acme"]
        with pytest.raises(InvalidTenantError):
            add_tenant(instance, "Not_Valid")
        assert registered_tenants(instance) == ["acme"]
