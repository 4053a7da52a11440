"""Drain the lifecycle-event outbox to Kafka, so a restart or an outage loses nothing."""

import dagster as dg

from ml_assets.resources.events import LifecycleEvents


@dg.sensor(
    name="outbox_relay_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Publishes lifecycle events still waiting in the outbox to the `ml.lifecycle` "
    "Kafka topic (acks=all, idempotent producer); steps relay their own events on exit, this "
    "catches what a broker outage or a crash left behind.",
)
def outbox_relay_sensor(context: dg.SensorEvaluationContext,
                        events: LifecycleEvents) -> dg.SkipReason:
    if not events.kafka_bootstrap:
        return dg.SkipReason("no Kafka configured: events stay in the outbox")
    try:
        published = events.relay_pending()
    except Exception as exc:  # noqa: BLE001 - retried on the next tick
        return dg.SkipReason(f"broker {events.kafka_bootstrap} unavailable, will retry: {exc}")
    return dg.SkipReason(f"published {published} events")
