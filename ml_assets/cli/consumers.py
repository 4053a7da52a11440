"""`ml-assets consumer run NAME|status`: one lifecycle-event consumer until SIGTERM, and what
the consumers have read."""

from __future__ import annotations

import argparse

from ml_assets.consumers import NAMES
from ml_assets.events import TOPIC
from ml_assets.settings import Settings


def _run(settings: Settings, args: argparse.Namespace) -> str:
    from ml_assets.consumers import process

    handled = process.run(settings, args.name, topic=args.topic, batch=args.batch)
    return f"consumer {args.name} stopped after {handled} events"


def _status(settings: Settings, args: argparse.Namespace) -> str:
    from ml_assets.consumers import tables

    with tables.engine(settings.platform_db_url).connect() as conn:
        return "\n".join(tables.progress(conn))


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_commands(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("consumer", help="lifecycle-event consumers (Kafka -> the "
                                "platform database)")
    actions = group.add_subparsers(dest="action", required=True)
    run = actions.add_parser("run", help="run one consumer until SIGTERM")
    run.add_argument("name", choices=NAMES)
    run.add_argument("--topic", default=TOPIC)
    run.add_argument("--batch", type=_positive, default=500,
                     help="most events written in one transaction")
    run.set_defaults(run=_run, emits_events=False)
    actions.add_parser("status", help="what each consumer has read, and the notifications by "
                       "status").set_defaults(run=_status, emits_events=False)
