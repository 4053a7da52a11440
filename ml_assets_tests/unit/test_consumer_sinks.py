"""The consumers' pure parts: the catalog's order-safe merge and what is worth a notification."""

import random

from ml_assets.consumers.catalog import merged, version_updates
from ml_assets.consumers.notification import notice
from ml_assets.events import EventType, LifecycleEvent
from ml_assets_testing.lifecycle import tenant_history


def fold(events: list[LifecycleEvent]) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    for event in events:
        for version, update in version_updates(event).items():
            rows[version] = merged(rows.get(version), update, event.id, event.time)
    return rows


def test_catalog_rows_are_the_same_whatever_order_events_arrive_in():
    history = tenant_history("acme", 4)
    in_order = fold(history)
    assert {v: row["stage"] for v, row in in_order.items()} == {
        "1": "Archived", "2": "Archived", "3": "Archived", "4": "Production"}
    assert in_order["4"]["endpoint_url"] == "http://serve/acme/4"
    assert in_order["4"]["lineage"] == {"code_version": "test", "dagster_run_id": "dr-4"}
    shuffled = list(history)
    for seed in range(20):
        random.Random(seed).shuffle(shuffled)
        assert fold(shuffled) == in_order


def test_a_late_registration_or_stage_event_does_not_move_a_version_back():
    registered, staged, promoted = [e for e in tenant_history("acme", 1)
                                    if e.type in (EventType.MODEL_REGISTERED,
                                                  EventType.MODEL_STAGE_CHANGED)]
    row = fold([promoted, staged, registered])["1"]
    assert (row["stage"], row["stage_event"]) == ("Production", promoted.id)
    assert row["registered_at"] == registered.time


def test_promotions_rollbacks_and_deployments_are_notified_and_training_is_not():
    def event(type: EventType, **data) -> LifecycleEvent:
        return LifecycleEvent(type=type, tenant="acme", data=data)

    promoted = notice(event(EventType.MODEL_STAGE_CHANGED, version="3", to_stage="Production",
                            actor="api:k1", reason="beats v2"))
    assert promoted == ("info", "version 3 promoted to Production by api:k1: beats v2")
    rolled_back = notice(event(EventType.MODEL_STAGE_CHANGED, version="2",
                               to_stage="Production", actor="cli:ops",
                               reason="rollback from version 3"))
    assert rolled_back == ("warning", "Production rolled back to version 2 by cli:ops")
    canary = notice(event(EventType.CANARY_ROLLED_BACK, version="4", production_version="3",
                          reason="error rate 0.2 over 0.05"))
    assert canary[0] == "warning" and "canary version 4" in canary[1]
    assert notice(event(EventType.MODEL_DEPLOYED, version="3", stage="Production",
                        url="http://x"))[0] == "info"
    assert notice(event(EventType.MODEL_STAGE_CHANGED, version="3", to_stage="Staging")) is None
    assert notice(event(EventType.MODEL_TRAINING_COMPLETED, run_id="r")) is None
