"""One run over many tenants. Every asset of a use case has Dagster's single-run backfill
policy, so a backfill of many tenant partitions is one run whose steps get them all
(`context.partition_keys`) and pay the run's fixed costs (processes, imports, Ray) once. Each
step's body still runs once per tenant, on its own: one tenant's failure, or its failed
blocking check, stops that tenant alone, and the steps after skip it."""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

BACKFILL_POLICY = dg.BackfillPolicy.single_run()
# run tag prefix: the tenants an asset's step failed (or skipped) in a run over many tenants,
# a tag per asset (steps may run at once); the steps after it skip them, even those that only
# depend on it without reading its value, and a person reruns just them
FAILED_TAG = "ml_assets/failed/"


@dataclass(frozen=True)
class TenantFailed:
    """A tenant's value of an asset whose step failed for it in a run over many tenants (or
    whose blocking check failed): the steps after it skip the tenant, and a later run reading
    it gets this error instead of an earlier run's value."""

    asset: str
    error: str
    run_id: str

    def __str__(self) -> str:
        return f"{self.asset} failed for this tenant in run {self.run_id}: {self.error}"

    @property
    def cause(self) -> str:
        """The failure that started it: what a step skipping this tenant names."""
        return self.error if self.error.startswith("skipped: ") else f"skipped: {self}"


class UpstreamFailed(Exception):
    """A step's input is a tenant's TenantFailed: the step does nothing for that tenant."""


class TenantContext:
    """The step's context as one tenant's body sees it: the run's partition is the tenant."""

    has_partition_key = True

    def __init__(self, context: Any, tenant: str) -> None:
        self.run_context, self.partition_key = context, tenant

    @property
    def partition_keys(self) -> list[str]:
        return [self.partition_key]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.run_context, name)


def whole_run(context: Any) -> Any:
    """The real Dagster context behind a TenantContext (or the context itself)."""
    return getattr(context, "run_context", context)


@dataclass
class _Outcome:
    """What a tenant's body gave: its output (or failure), metadata and check results."""

    value: Any = None
    metadata: dict = field(default_factory=dict)
    materialize_only: bool = False
    checks: list[dg.AssetCheckResult] = field(default_factory=list)
    failed: TenantFailed | None = None


def _outcome(events: list) -> _Outcome:
    outcome = _Outcome()
    for event in events:
        if isinstance(event, dg.Output):
            outcome.value, outcome.metadata = event.value, dict(event.metadata)
        elif isinstance(event, dg.MaterializeResult):
            outcome.materialize_only, outcome.metadata = True, dict(event.metadata or {})
            outcome.checks += list(event.check_results or [])
        elif isinstance(event, dg.AssetCheckResult):
            outcome.checks.append(event)
        else:
            outcome.value = event
    return outcome


def failed_tag(asset: dg.AssetKey) -> str:
    return FAILED_TAG + ".".join(asset.path)


def failed_tenants(run: dg.DagsterRun) -> dict[str, list[str]]:
    """{asset: tenants its step failed or skipped} of a run over many tenants."""
    return {key.removeprefix(FAILED_TAG).replace(".", "/"): json.loads(value)
            for key, value in run.tags.items() if key.startswith(FAILED_TAG)}


def per_tenant(body: Callable, inputs: tuple[str, ...] = (), threads: int = 1) -> Callable:
    """`body` (an asset's compute function written for one tenant) as a step that also runs
    over many tenants: once per tenant, `threads` tenants at a time, its `inputs` each
    tenant's own value; a tenant an upstream step of the run failed is skipped."""
    generator = inspect.isgeneratorfunction(body)

    @functools.wraps(body)
    def step(context: dg.AssetExecutionContext, **kwargs: Any) -> Iterator[Any]:
        if context.has_partition_key:  # a run of one tenant: the body as written
            failed = [kwargs[name] for name in inputs if isinstance(kwargs[name], TenantFailed)]
            if failed:
                raise UpstreamFailed(f"tenant {context.partition_key!r}: {failed[0]}")
            result = body(context, **kwargs)
            yield from (result if generator else [_as_event(result)])
            return
        yield from _over_tenants(body, generator, context, kwargs, inputs, threads)

    # over many tenants an input is {tenant: value}: its annotation must not type-check it
    signature = inspect.signature(body)
    step.__signature__ = signature.replace(parameters=[
        p.replace(annotation=inspect.Parameter.empty) if p.name in inputs else p
        for p in signature.parameters.values()])
    step.__annotations__ = {k: v for k, v in body.__annotations__.items() if k not in inputs}
    return step


def _as_event(result: Any) -> Any:
    return result if isinstance(result, dg.Output | dg.MaterializeResult) else dg.Output(result)


def _over_tenants(body: Callable, generator: bool, context: dg.AssetExecutionContext,
                  kwargs: dict, inputs: tuple[str, ...], threads: int) -> Iterator[Any]:
    tenants = list(context.partition_keys)
    asset, run_id = context.asset_key.to_user_string(), context.run.run_id
    blocking = {spec.name for spec in _check_specs(context) if spec.blocking}
    upstream_assets = {key.to_user_string()
                       for key in context.assets_def.asset_deps[context.asset_key]}
    upstream_failed = {tenant: f"{name} failed for this tenant in run {run_id}"
                       for name, failed in failed_tenants(
                           context.instance.get_run_by_id(run_id)).items()
                       if name in upstream_assets for tenant in failed}

    def one(tenant: str) -> _Outcome:
        upstream = {name: kwargs[name] if len(tenants) == 1 else kwargs[name][tenant]
                    for name in inputs}
        failed = [value.cause for value in upstream.values() if isinstance(value, TenantFailed)]
        if tenant in upstream_failed:
            failed.append(f"skipped: {upstream_failed[tenant]}")
        if failed:
            return _Outcome(failed=TenantFailed(asset, failed[0], run_id))
        try:
            result = body(TenantContext(context, tenant), **{**kwargs, **upstream})
            outcome = _outcome(list(result) if generator else [result])
        except Exception as exc:  # noqa: BLE001 - one tenant's failure must not stop the others
            context.log.error(f"{asset} failed for tenant {tenant!r}:\n"
                              + "".join(traceback.format_exception(exc)))
            return _Outcome(failed=TenantFailed(asset, f"{type(exc).__name__}: {exc}", run_id))
        for check in outcome.checks:
            # a failed blocking check stops the steps after it, for this tenant alone
            if check.check_name in blocking and not check.passed and (
                    check.severity == dg.AssetCheckSeverity.ERROR):
                outcome.failed = TenantFailed(asset, f"blocking check {check.check_name} "
                                              f"failed: {check.description}", run_id)
        return outcome

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        outcomes = dict(zip(tenants, pool.map(one, tenants), strict=True))
    errors = {t: str(o.failed) for t, o in outcomes.items()
              if o.failed is not None and not o.checks}
    if len(errors) == len(tenants):
        raise dg.Failure(f"{asset} failed for every tenant of the run",
                         metadata={"errors": dg.MetadataValue.json(errors)})
    failed = sorted(t for t, o in outcomes.items() if o.failed is not None)
    if failed:
        context.instance.add_run_tags(run_id, {failed_tag(context.asset_key): json.dumps(failed)})
    for tenant, outcome in outcomes.items():
        metadata = dict(outcome.metadata)
        if outcome.failed is not None:
            metadata["tenant_failed"] = outcome.failed.error
        context.add_asset_metadata(metadata, partition_key=tenant)
    summary = {"tenants": len(tenants), "failed_tenants": dg.MetadataValue.json(failed)}
    if any(o.materialize_only for o in outcomes.values()):
        yield dg.MaterializeResult(metadata=summary)
    else:
        values = {t: o.failed or o.value for t, o in outcomes.items()}
        yield dg.Output(values if len(tenants) > 1 else values[tenants[0]], metadata=summary)
    yield from _check_results(context, outcomes)


def _check_results(context: dg.AssetExecutionContext,
                   outcomes: dict[str, _Outcome]) -> Iterator[dg.AssetCheckResult]:
    """Each tenant's check results as that partition's evaluations, and one result per check
    for the run: failed as a warning when some tenant failed it, which, unlike an error,
    blocks no other tenant's steps."""
    for spec in _check_specs(context):
        yield _recorded(context, spec, {t: c for t, o in outcomes.items()
                                        for c in o.checks if c.check_name == spec.name})


def _check_specs(context: dg.AssetExecutionContext) -> list[dg.AssetCheckSpec]:
    return [spec for spec in context.assets_def.check_specs
            if spec.key in context.selected_asset_check_keys]


def _recorded(context: Any, spec: dg.AssetCheckSpec,
              results: dict[str, dg.AssetCheckResult]) -> dg.AssetCheckResult:
    """Record each tenant's result as its partition's evaluation; the run's own result."""
    log_event = getattr(context, "op_execution_context", context).log_event
    for tenant, result in results.items():
        log_event(dg.AssetCheckEvaluation(
            asset_key=spec.asset_key, check_name=spec.name, passed=result.passed,
            metadata=result.metadata, severity=result.severity,
            description=result.description, blocking=spec.blocking, partition=tenant))
    failing = sorted(t for t, r in results.items() if not r.passed)
    return dg.AssetCheckResult(
        check_name=spec.name, asset_key=spec.asset_key, passed=not failing,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{len(results) - len(failing)} of {len(results)} tenants evaluated "
        "passed" + (f"; failed: {', '.join(failing)}" if failing else ""),
        metadata={"tenants_failed": dg.MetadataValue.json(failing),
                  "tenants_evaluated": len(results)})


def per_tenant_check(check: Callable) -> Callable:
    """An asset check written for one tenant, evaluated per tenant in a run over many: each
    tenant's result recorded as its partition's evaluation, and a warning for the run naming
    the tenants that failed (an error would block every tenant's steps)."""

    @functools.wraps(check)
    def evaluate(context: dg.AssetCheckExecutionContext, **kwargs: Any) -> dg.AssetCheckResult:
        if context.has_partition_key:
            return check(context, **kwargs)
        spec = next(iter(context.check_specs))
        results = {}
        for tenant in context.partition_keys:
            try:
                results[tenant] = check(TenantContext(context, tenant), **kwargs)
            except Exception as exc:  # noqa: BLE001 - a tenant's error is its failed check
                results[tenant] = dg.AssetCheckResult(
                    passed=False, severity=dg.AssetCheckSeverity.ERROR,
                    description=f"{type(exc).__name__}: {exc}")
        return _recorded(context, spec, results)

    return evaluate


def blocks(ordered: list[str], wanted: set[str]) -> list[list[str]]:
    """`wanted` tenants as unbroken runs of the partition order: a run over many tenants spans
    a range of partitions, so these are the fewest runs that cover exactly them."""
    found: list[list[str]] = []
    previous = False
    for tenant in ordered:
        if tenant in wanted:
            if previous:
                found[-1].append(tenant)
            else:
                found.append([tenant])
        previous = tenant in wanted
    return found


def batch_key(due: dict[str, str]) -> str:
    """A run key for a batch of tenants from why each is due ({tenant: its own run key}): the
    same batch for the same reasons is asked for once."""
    return hashlib.sha256(json.dumps(due, sort_keys=True).encode()).hexdigest()[:16]


def run_requests(ordered: list[str], wanted: set[str], run_key: str,
                 **request: Any) -> list[dg.RunRequest]:
    """One run per unbroken block of `wanted` tenants (one tenant: a plain partition run)."""
    requests = []
    for block in blocks(ordered, wanted):
        span = block[0] if len(block) == 1 else f"{block[0]}...{block[-1]}"
        tags = dict(request.get("tags") or {})
        if len(block) > 1:
            tags |= {"dagster/asset_partition_range_start": block[0],
                     "dagster/asset_partition_range_end": block[-1]}
        requests.append(dg.RunRequest(
            run_key=f"{run_key}:{span}", partition_key=block[0] if len(block) == 1 else None,
            **{**request, "tags": tags}))
    return requests
