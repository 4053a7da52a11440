"""LLMs per tenant: registered in MLflow beside the churn model, served on vLLM (no Dagster)."""
