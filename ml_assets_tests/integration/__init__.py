"""Tests against real servers (S3, Kafka, MLflow, PostgreSQL, Redis) and a Ray cluster."""
