"""The rollout's decisions, one per monitoring window, as a pure function of the live route,
the policy and the window's traffic."""

import pytest
from pydantic import ValidationError

from ml_assets.registry.rollout import Traffic, next_step
from ml_assets.resources.rollout import RolloutPolicy, RolloutSteps
from ml_assets.serving.routing import Route

STEPS = RolloutSteps(shadow_requests=100, canary_steps=[10, 50, 100], min_requests=200,
                     min_minutes=10)
NOW = 1_000_000.0
QUIET = Traffic(shadow_answers=0, shadow_errors=0, canary_requests=0, canary_check_passed=False)
HEALTHY = Traffic(shadow_answers=150, shadow_errors=0, canary_requests=300,
                  canary_check_passed=True)


def route(**fields) -> Route:
    return Route(**{"registry_uri": "sqlite://", "primary": "1", "staging": "2", **fields})


@pytest.mark.parametrize("live, traffic, expected", [
    (route(staging=None), HEALTHY, ("hold", None)),  # nothing to roll out
    (route(primary=None), HEALTHY, ("hold", None)),  # the first version has its own policy
    (route(paused=True), HEALTHY, ("hold", None)),
    (route(), QUIET, ("shadow", None)),  # a new Staging version starts in shadow
    (route(shadow=True, since=NOW), QUIET, ("hold", None)),
    (route(shadow=True, since=NOW), HEALTHY, ("canary", 10)),
    (route(shadow=True, since=NOW), Traffic(150, 3, 0, False), ("abort", None)),
    (route(canary="2", canary_weight=10, since=NOW - 3600), HEALTHY, ("canary", 50)),
    (route(canary="2", canary_weight=50, since=NOW - 3600), HEALTHY, ("promote", 100)),
    # each gate holds on its own: too few requests, too soon, a check with nothing compared
    (route(canary="2", canary_weight=10, since=NOW - 3600), Traffic(0, 0, 150, True),
     ("hold", None)),
    (route(canary="2", canary_weight=10, since=NOW - 60), HEALTHY, ("hold", None)),
    (route(canary="2", canary_weight=10, since=NOW - 3600), Traffic(0, 0, 300, False),
     ("hold", None)),
])
def test_next_step(live, traffic, expected):
    assert next_step(live, STEPS, traffic, NOW) == expected


def test_no_shadow_starts_at_the_first_canary_step_and_disabled_holds():
    no_shadow = STEPS.model_copy(update={"shadow_requests": 0})
    assert next_step(route(), no_shadow, QUIET, NOW) == ("canary", 10)
    off = STEPS.model_copy(update={"enabled": False})
    assert next_step(route(), off, HEALTHY, NOW) == ("hold", None)


@pytest.mark.parametrize("steps", [[], [10, 50], [50, 10, 100], [0, 100], [10, 10, 100]])
def test_canary_steps_must_increase_to_100(steps):
    with pytest.raises(ValidationError, match="canary_steps"):
        RolloutSteps(canary_steps=steps)


def test_per_tenant_steps_and_tenant_keys_checked():
    policy = RolloutPolicy(tenant_steps={"acme": {"min_minutes": 1}})
    from ml_assets.tenants import Tenant

    assert policy.for_tenant(Tenant("acme")).min_minutes == 1
    assert policy.for_tenant(Tenant("globex")).min_minutes == 10
    with pytest.raises(ValidationError, match="invalid tenant"):
        RolloutPolicy(tenant_steps={"Not_A_Tenant": {}})
