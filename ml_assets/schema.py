"""The column names of a tenant's source data: what the feature view, the model, the request
path and monitoring agree on."""

FEATURES = [
    "tenure_days",
    "monthly_spend",
    "sessions_30d",
    "avg_session_minutes",
    "support_tickets_90d",
    "days_since_last_login",
    "payment_failures_90d",
    "plan_tier",
    "discount_pct",
    "nps_score",
]
ENTITY = "customer_id"
TIMESTAMP = "event_timestamp"
LABEL = "churned"
LABEL_TIMESTAMP = "label_timestamp"
