"""The life of a churn model per tenant as Dagster assets."""

__version__ = "0.1.0"
