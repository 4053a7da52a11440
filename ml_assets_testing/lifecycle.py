"""Synthetic lifecycle-event histories, shaped like the graph's: train, register, stage, promote
(the previous Production archived), deploy; one stream per tenant."""

from datetime import UTC, datetime, timedelta

from ml_assets.events import EventType, LifecycleEvent


def tenant_history(tenant: str, versions: int, start: datetime | None = None,
                   ) -> list[LifecycleEvent]:
    """Events of `versions` versions trained, registered and promoted in turn."""
    clock = start or datetime(2026, 11, 1, tzinfo=UTC)
    events: list[LifecycleEvent] = []
    model = f"{tenant}-churn"

    def emit(type: EventType, **data) -> None:
        nonlocal clock
        clock += timedelta(seconds=1)
        events.append(LifecycleEvent(type=type, tenant=tenant, time=clock, data=data))

    for v in range(1, versions + 1):
        run_id, version = f"run-{tenant}-{v}", str(v)
        emit(EventType.MODEL_TRAINING_STARTED, run_id=run_id, experiment_name=f"{tenant}-exp",
             data_version=f"data-{v}")
        emit(EventType.MODEL_TRAINING_COMPLETED, run_id=run_id, model_uri=f"models:/m-{v}",
             metrics={"val_roc_auc": round(0.7 + v / 1000, 4)})
        emit(EventType.MODEL_REGISTERED, model=model, version=version, run_id=run_id,
             stage="None", lineage={"code_version": "test", "dagster_run_id": f"dr-{v}"})
        emit(EventType.MODEL_STAGE_CHANGED, model=model, version=version, from_stage="None",
             to_stage="Staging", actor="test", reason="passed beats_baseline")
        if v > 1:
            emit(EventType.MODEL_STAGE_CHANGED, model=model, version=str(v - 1),
                 from_stage="Production", to_stage="Archived", actor="test",
                 reason=f"replaced by version {v}")
        emit(EventType.MODEL_STAGE_CHANGED, model=model, version=version, from_stage="Staging",
             to_stage="Production", actor="test", reason=f"auto_promote {v}")
        emit(EventType.MODEL_DEPLOYED, model=model, version=version, stage="Production",
             url=f"http://serve/{tenant}/{v}")
    return events


def interleaved(tenants: list[str], versions: int, start: datetime | None = None,
                ) -> list[LifecycleEvent]:
    """Every tenant's history, merged in time order (as one outbox would hold them)."""
    merged = [e for tenant in tenants for e in tenant_history(tenant, versions, start)]
    return sorted(merged, key=lambda e: e.time)
