"""The Feast repo of a use case: its entity and feature views (repo.py), applied per (tenant,
use case), and the ASOF offline store (offline_store.py)."""
