"""The audit, catalog and notification consumers as real processes (`ml-assets consumer run`)
between a real Kafka-protocol broker and PostgreSQL: SIGKILLed mid-stream and restarted, then
fed the whole topic again by a relay re-send, each sink holds every event exactly once."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import func, select

from ml_assets.consumers import NAMES, catalog, tables
from ml_assets.events import Outbox, ensure_topic, producer, relay
from ml_assets_testing.alert_servers import WebhookReceiver, start_alertmanager
from ml_assets_testing.lifecycle import interleaved
from ml_assets_testing.servers import venv_bin
from ml_assets_tests.conftest import fresh_database

log = logging.getLogger(__name__)
if TYPE_CHECKING:
    from kafka import KafkaProducer

TOPIC = "t-consumers"
TENANTS = ["acme", "globex", "initech"]
VERSIONS = 30  # 3 tenants x (7 x 30 - 1) = 627 events
CHUNK = 40  # events relayed at a time while the consumers run
BURST = 250  # relayed at once, the consumers killed inside it


@dataclass
class Stream:
    """The module's shared state: the outbox, the platform database, the running consumers."""

    outbox: Outbox
    db_url: str
    bootstrap: str
    env: dict[str, str]
    logs: Path
    receiver: WebhookReceiver
    alertmanager: str
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    at_kill: dict[str, int] = field(default_factory=dict)
    published_at_kill: int = 0
    kafka: KafkaProducer | None = None

    @property
    def engine(self):
        return tables.engine(self.db_url)

    def start(self, name: str) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [venv_bin("ml-assets"), "consumer", "run", name, "--topic", TOPIC, "--batch", "10"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def relay(self) -> int:
        if self.kafka is None:
            self.kafka = producer(self.bootstrap)
        return relay(self.outbox, self.kafka, TOPIC)

    def read_offsets(self) -> dict[str, int]:
        """Group -> how many messages it has committed, all partitions together."""
        o = tables.consumer_offsets
        with self.engine.connect() as conn:
            rows = conn.execute(select(o.c.group_id, func.sum(o.c.next_offset))
                                .where(o.c.topic == TOPIC).group_by(o.c.group_id))
            return {group: int(total) for group, total in rows}

    def wait_for(self, condition, timeout: float = 60.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            dead = {n: p.returncode for n, p in self.processes.items() if p.poll() is not None}
            if dead or time.monotonic() > deadline:
                logs = {n: (self.logs / f"{n}.log").read_text()[-2000:] for n in NAMES}
                raise AssertionError(f"waiting for {what}: exited {dead}; logs {logs}")
            time.sleep(0.02)

    def pending(self) -> int:
        """Notifications not yet delivered to every receiver."""
        n = tables.notifications
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(n)
                                .where(n.c.status != "delivered")).scalar_one()

    def count(self, table, column=None) -> int:
        query = select(func.count(func.distinct(column)) if column is not None
                       else func.count()).select_from(table)
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()


@pytest.fixture(scope="module")
def stream(broker, tmp_path_factory) -> Iterator[Stream]:
    state = tmp_path_factory.mktemp("consumers")
    broker.start()
    receiver = WebhookReceiver()
    alertmanager, alertmanager_process = start_alertmanager(state / "alertmanager",
                                                            receiver.url + "/alertmanager")
    with fresh_database() as database:
        url = f"postgresql://postgres@127.0.0.1:5432/{database}"
        tables.engine(url)  # the tables, before three processes race to create them
        env = {**os.environ, "ML_ASSETS_STATE_DIR": str(state), "ML_ASSETS_PLATFORM_DB": url,
               "ML_ASSETS_KAFKA_BOOTSTRAP": broker.bootstrap,
               "ML_ASSETS_ALERT_WEBHOOK_URL": receiver.url + "/hook",
               "ML_ASSETS_ALERTMANAGER_URL": alertmanager}
        ensure_topic(broker.bootstrap, TOPIC)
        shared = Stream(Outbox(state / "outbox.db"), url, broker.bootstrap, env, state,
                        receiver, alertmanager)
        try:
            yield shared
        finally:
            for process in shared.processes.values():
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=10)
            if shared.kafka is not None:
                shared.kafka.close()
            alertmanager_process.terminate()
            alertmanager_process.wait(timeout=10)
            receiver.close()
            tables.engine(url).dispose()
            broker.kill()


@pytest.fixture(scope="module")
def killed_and_restarted(stream: Stream) -> Stream:
    """Consumers reading while the first half of the events is relayed in chunks; then a burst,
    and each consumer SIGKILLed as soon as it has committed part of the burst (so with a backlog,
    likely inside a batch); the rest relayed while they are down; then all restarted and waited
    for until each has committed the whole topic."""
    events = interleaved(TENANTS, VERSIONS, start=datetime.now(UTC) - timedelta(hours=1))
    half = len(events) // 2
    chunks = [events[i:min(i + CHUNK, half)] for i in range(0, half, CHUNK)]
    chunks += [events[half:half + BURST], events[half + BURST:]]
    for name in NAMES:
        stream.start(name)
    published = 0
    for number, chunk in enumerate(chunks):
        for event in chunk:
            stream.outbox.append(event)
        if number == len(chunks) - 2:  # the burst: every consumer through the first half
            stream.wait_for(lambda: stream.read_offsets() == dict.fromkeys(NAMES, half),
                            what="every consumer through the first half")
        published += stream.relay()
        if number == len(chunks) - 2:
            stream.published_at_kill = published
            alive, deadline = set(NAMES), time.monotonic() + 60
            while alive:
                offsets = stream.read_offsets()
                for name in sorted(alive):
                    if offsets[name] > half:  # into the burst: kill it now
                        stream.processes[name].send_signal(signal.SIGKILL)
                        stream.processes[name].wait(timeout=10)
                        alive.discard(name)
                running = all(stream.processes[name].poll() is None for name in alive)
                assert running and time.monotonic() < deadline, f"{alive} never got going"
                time.sleep(0.005)
            stream.at_kill = stream.read_offsets()
    assert published == len(events)
    for name in NAMES:
        stream.start(name)
    stream.wait_for(lambda: stream.read_offsets() == dict.fromkeys(NAMES, len(events)),
                    what="every consumer through the topic")
    return stream


def notifiable() -> int:
    return 2 * VERSIONS * len(TENANTS)  # per version: its promotion and its deployment


def test_sigkill_mid_stream_then_restart_loses_and_duplicates_nothing(killed_and_restarted):
    s = killed_and_restarted
    written = s.outbox.events()
    n = len(written)
    log.info("events %d; committed at SIGKILL %s of %d published", n, s.at_kill,
             s.published_at_kill)
    # really mid-stream: every consumer was killed with a backlog (into the burst, not
    # through it), and the events after the burst were relayed while they were down
    assert all(n // 2 < s.at_kill[name] < s.published_at_kill < n for name in NAMES)
    audit = tables.audit_events
    with s.engine.connect() as conn:
        audited = [row.event_id for row in conn.execute(select(audit.c.event_id))]
    log.info("audit rows %d, distinct %d", len(audited), len(set(audited)))
    assert len(audited) == n  # counted in PostgreSQL, not through a de-duplicating reader
    assert set(audited) == {e.id for e in written}  # 0 duplicates, 0 lost
    assert s.count(tables.catalog_events) == s.count(
        tables.catalog_events, tables.catalog_events.c.event_id) == n
    assert s.count(tables.notifications) == s.count(
        tables.notifications, tables.notifications.c.event_id) == notifiable()


def test_offsets_are_mirrored_to_the_brokers_consumer_groups(killed_and_restarted):
    """The database is the source of truth; the broker's group offsets show the same, for
    Kafka tooling (tansu takes commits of a group that never joined)."""
    from kafka import KafkaConsumer, TopicPartition

    s = killed_and_restarted

    def committed() -> dict[str, int]:
        found = {}
        for group in NAMES:
            reader = KafkaConsumer(bootstrap_servers=s.bootstrap, group_id=group,
                                   enable_auto_commit=False)
            try:
                partitions = reader.partitions_for_topic(TOPIC)
                found[group] = sum(reader.committed(TopicPartition(TOPIC, p)) or 0
                                   for p in partitions)
            finally:
                reader.close()
        return found

    s.wait_for(lambda: committed() == s.read_offsets(), what="the broker's group offsets")


def test_catalog_holds_each_version_with_its_stage_metrics_and_lineage(killed_and_restarted):
    engine = killed_and_restarted.engine
    assert killed_and_restarted.count(tables.catalog_versions) == VERSIONS * len(TENANTS)
    for tenant in TENANTS:
        found = catalog.versions(engine, tenant)
        assert [v["version"] for v in found] == [str(v) for v in range(1, VERSIONS + 1)]
        stages = [v["stage"] for v in found]
        assert stages == ["Archived"] * (VERSIONS - 1) + ["Production"]
        for number, version in enumerate(found, start=1):
            assert version["metrics"] == {"val_roc_auc": round(0.7 + number / 1000, 4)}
            assert version["lineage"] == {
                "run_id": f"run-{tenant}-{number}", "data_version": f"data-{number}",
                "experiment_name": f"{tenant}-exp", "model_uri": f"models:/m-{number}",
                "code_version": "test", "dagster_run_id": f"dr-{number}"}
            assert version["endpoint_url"] == f"http://serve/{tenant}/{number}"
            assert version["deployed_at"] > version["registered_at"]


def test_notifications_reach_the_tenants_webhook_and_alertmanager(killed_and_restarted):
    s = killed_and_restarted
    s.wait_for(lambda: s.pending() == 0, what="every notification delivered")
    with s.engine.connect() as conn:
        rows = list(conn.execute(select(tables.notifications)).mappings())
    assert {tuple(row["delivered_to"]) for row in rows} == {("alertmanager", "webhook")}
    ids = {row["event_id"] for row in rows}
    posted = s.receiver.bodies("/hook")
    # at least once: a SIGKILL between a send and its mark sends that one again
    assert {b["alert"]["event_id"] for b in posted} == ids and len(posted) >= len(ids)
    by_id = {row["event_id"]: row for row in rows}
    for body in posted:
        row = by_id[body["alert"]["event_id"]]
        assert (body["alert"]["tenant"], body["alert"]["summary"]) == (row["tenant"],
                                                                     row["summary"])
        assert row["summary"] in body["text"]
    with urllib.request.urlopen(f"{s.alertmanager}/api/v2/alerts") as response:
        active = json.load(response)
    assert {a["labels"]["event_id"] for a in active} == ids
    assert {a["labels"]["tenant"] for a in active} == set(TENANTS)


def test_relay_resending_the_whole_topic_changes_nothing(killed_and_restarted):
    s = killed_and_restarted
    n = len(s.outbox.events())

    def snapshot() -> dict:
        with s.engine.connect() as conn:
            return {table.name: sorted(map(tuple, conn.execute(select(table))), key=str)
                    for table in (tables.audit_events, tables.catalog_events,
                                  tables.catalog_versions, tables.catalog_runs,
                                  tables.notifications)}

    s.wait_for(lambda: s.pending() == 0, what="deliveries")
    # the webhook's own path: Alertmanager also posts to the receiver, on its own schedule
    before, posted = snapshot(), len(s.receiver.bodies("/hook"))
    with sqlite3.connect(s.outbox.path) as outbox:
        outbox.execute("UPDATE outbox SET relayed_at = NULL")  # as if no send was acknowledged
    assert s.relay() == n
    s.wait_for(lambda: s.read_offsets() == dict.fromkeys(NAMES, 2 * n),
               what="every consumer through the duplicates")
    assert snapshot() == before
    assert len(s.receiver.bodies("/hook")) == posted




def test_consumers_ride_out_a_broker_restart(killed_and_restarted, broker):
    """The broker SIGKILLed and started again under running consumers: they reconnect and
    read what is relayed after it, once."""
    s = killed_and_restarted
    before = s.read_offsets()
    broker.kill()
    broker.start()
    if s.kafka is not None:  # the test's producer: a fresh one for the new broker process
        s.kafka.close()
        s.kafka = None
    later = interleaved(["umbrella"], 2, start=datetime.now(UTC))  # the routes read acme
    for event in later:
        s.outbox.append(event)
    assert s.relay() == len(later)
    s.wait_for(lambda: s.read_offsets() == {g: n + len(later) for g, n in before.items()},
               timeout=120, what="every consumer after the broker restart")
    assert s.count(tables.audit_events) == s.count(
        tables.audit_events, tables.audit_events.c.event_id) == len(s.outbox.events())


@pytest.fixture(scope="module")
def api(killed_and_restarted, tmp_path_factory):
    """The ML Service on the consumers' platform database, and a viewer key per tenant."""
    from fastapi.testclient import TestClient

    from ml_assets.access.keys import KeyStore, Role
    from ml_assets.service.app import create_app
    from ml_assets.settings import load_settings
    from ml_assets.tenants import Tenant

    settings = load_settings({"ML_ASSETS_STATE_DIR": str(tmp_path_factory.mktemp("api")),
                              "ML_ASSETS_PLATFORM_DB": killed_and_restarted.db_url})
    keys = KeyStore(settings.api_keys_path)
    tokens = {t: keys.create(Tenant(t), Role.viewer)[1] for t in TENANTS}
    client = TestClient(create_app(settings, rate_limit_per_minute=100_000))
    return client, {t: {"Authorization": f"Bearer {token}"} for t, token in tokens.items()}


def test_audit_route_answers_for_the_callers_tenant_only(api):
    client, auth = api
    everything = client.get("/v1/tenants/acme/audit?limit=1000", headers=auth["acme"])
    assert everything.status_code == 200, everything.text
    entries = everything.json()
    assert len(entries) == 7 * VERSIONS - 1 and {e["tenant"] for e in entries} == {"acme"}
    assert [e["time"] for e in entries] == sorted(e["time"] for e in entries)
    deployed = client.get("/v1/tenants/acme/audit", headers=auth["acme"],
                          params={"type": "MODEL_DEPLOYED", "limit": 1000}).json()
    assert [e["data"]["version"] for e in deployed] == [str(v) for v in range(1, VERSIONS + 1)]
    since = deployed[-1]["time"]
    last = client.get("/v1/tenants/acme/audit", headers=auth["acme"],
                      params={"since": since}).json()
    assert [e["id"] for e in last] == [deployed[-1]["id"]]
    assert len(client.get("/v1/tenants/acme/audit?limit=5", headers=auth["acme"]).json()) == 5
    refused = client.get("/v1/tenants/acme/audit", headers=auth["globex"])
    assert refused.status_code == 403 and "acme" not in refused.text
    assert client.get("/v1/tenants/acme/audit").status_code == 401


@pytest.mark.parametrize(("query", "field"), [
    ("type=MODEL_EXPLODED", "type"), ("limit=0", "limit"), ("limit=1001", "limit"),
    ("limit=ten", "limit"), ("since=yesterday", "since"), ("since=2026-11-01T00:00:00", "since"),
    ("since=0001-01-01T00:00:00%2B05:00", "since"), ("tpye=MODEL_DEPLOYED", "tpye"),
])
def test_bad_audit_query_is_422_naming_the_field(api, query, field):
    client, auth = api
    response = client.get(f"/v1/tenants/acme/audit?{query}", headers=auth["acme"])
    assert response.status_code == 422, response.text
    assert [e["loc"] for e in response.json()["detail"]] == [["query", field]]


def test_catalog_route_answers_for_the_callers_tenant_only(api):
    client, auth = api
    response = client.get("/v1/tenants/globex/catalog", headers=auth["globex"])
    assert response.status_code == 200, response.text
    versions = response.json()
    assert len(versions) == VERSIONS
    assert versions[-1]["stage"] == "Production"
    assert {v["lineage"]["run_id"].split("-")[1] for v in versions} == {"globex"}
    assert versions[0]["metrics"] == {"val_roc_auc": 0.701}
    refused = client.get("/v1/tenants/globex/catalog", headers=auth["acme"])
    assert refused.status_code == 403 and "run-globex" not in refused.text

def test_no_generated_input_to_the_consumer_routes_makes_a_server_error(api):
    """The service spec's fuzzing (test_service) on these two routes, with their own data."""
    import schemathesis
    from schemathesis import GenerationMode

    from ml_assets_tests.integration.test_service import fuzz_operation

    client, auth = api
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    operations = [result.ok() for result in schema.get_all_operations()
                  if result.ok().path.endswith(("/audit", "/catalog"))]
    token = auth["initech"]["Authorization"].removeprefix("Bearer ")
    tried: dict[str, int] = {}
    statuses: set[int] = set()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz_operation(operation, mode, True, token, tried, statuses)
    assert len(operations) == 2 and sum(tried.values()) >= 2 * 2 * 20
    assert {200, 422} <= statuses and not {s for s in statuses if s >= 500}


def test_consumer_status_reads_the_platform_database(killed_and_restarted):
    s = killed_and_restarted
    out = subprocess.run([venv_bin("ml-assets"), "consumer", "status"], env=s.env, check=True,
                         capture_output=True, text=True).stdout.splitlines()
    offsets = s.read_offsets()
    assert [line.split()[:4] for line in out[:3]] == [
        [group, TOPIC, "at", str(offsets[group])] for group in sorted(NAMES)]
    assert out[3].startswith("notifications ") and "delivered" in out[3]

def test_sigterm_stops_each_consumer_after_its_batch(killed_and_restarted):
    s = killed_and_restarted
    for process in s.processes.values():
        process.send_signal(signal.SIGTERM)
    for name, process in s.processes.items():
        assert process.wait(timeout=20) == 0
        assert f"consumer {name} stopped after" in (s.logs / f"{name}.log").read_text()
