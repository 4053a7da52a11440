"""The ML Service API (port 8000): validated experiments, tenant-bound API keys, Dagster runs."""
