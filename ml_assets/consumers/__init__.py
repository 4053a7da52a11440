"""Kafka consumers of the lifecycle events: audit, catalog and notification, each a process
(`ml-assets consumer run NAME`) writing to the platform database (`ML_ASSETS_PLATFORM_DB`)."""

NAMES = ("audit", "catalog", "notification")
