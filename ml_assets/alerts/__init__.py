"""Alerts that reach people: receivers (Alertmanager, webhooks) and one alert per breach."""
