"""Who may call what: API keys bound to a tenant and a role, and a rate limit per key. The ML
Service and the Serve replica both check them (no Dagster, no web framework here)."""
