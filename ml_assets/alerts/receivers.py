"""Where alerts go: Prometheus Alertmanager (its v2 API) and Slack-compatible webhooks, chosen
per tenant. Open-source Dagster has no alert policies and its run-failure sensors never see a
failed asset check (the run succeeds), so delivery is ours."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from ml_assets.tenants import Tenant, validated_keys

Severity = Literal["critical", "warning", "info"]


def _number(value: float | None) -> str:
    return "none" if value is None else f"{value:.4g}"


class Alert(BaseModel):
    """One alert: what failed for whom, the observed value against its threshold, the window,
    and links to the Dagster check and the MLflow version. `ends_at` set means resolved."""

    tenant: str
    name: str  # the check (or, for notifications, the event type)
    use_case: str = "churn"
    severity: Severity = "critical"
    summary: str
    observed: float | None = None
    threshold: float | None = None
    window_start: str | None = None
    window_end: str | None = None
    model_version: str | None = None
    links: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    ends_at: datetime | None = None

    _tenant = field_validator("tenant")(lambda cls, value: Tenant(value).key)

    @property
    def resolved(self) -> bool:
        return self.ends_at is not None

    def labels(self) -> dict[str, str]:
        """Alertmanager's identity of the alert: one per tenant, use case and check (the
        version is an annotation, so a breach that moves to a new version stays one alert)."""
        return {"alertname": f"ml_assets_{self.name}", "tenant": self.tenant,
                "use_case": self.use_case, "check": self.name, "severity": self.severity}

    def description(self) -> str:
        parts = [self.summary]
        if self.observed is not None or self.threshold is not None:
            parts.append(f"observed {_number(self.observed)} against threshold "
                         f"{_number(self.threshold)}")
        if self.window_start and self.window_end:
            parts.append(f"window {self.window_start} to {self.window_end}")
        if self.model_version:
            parts.append(f"model version {self.model_version}")
        return "; ".join(parts)

    def alertmanager_payload(self) -> dict:
        annotations = {"summary": self.summary, "description": self.description(),
                       **{f"{name}_url": url for name, url in self.links.items()}}
        if self.observed is not None:
            annotations["observed"] = str(self.observed)
        if self.threshold is not None:
            annotations["threshold"] = str(self.threshold)
        if self.model_version:
            annotations["model_version"] = self.model_version
        payload = {"labels": self.labels(), "annotations": annotations,
                   "startsAt": self.starts_at.isoformat()}
        if self.ends_at is not None:
            payload["endsAt"] = self.ends_at.isoformat()
        if "dagster" in self.links:
            payload["generatorURL"] = self.links["dagster"]
        return payload

    def webhook_payload(self) -> dict:
        """A Slack incoming-webhook body (Mattermost and Rocket.Chat take the same `text`)."""
        state = "RESOLVED" if self.resolved else self.severity.upper()
        links = " | ".join(f"<{url}|{name}>" for name, url in self.links.items())
        text = f"[{state}] {self.tenant}/{self.use_case} {self.name}: {self.description()}"
        return {"text": text + (f"\n{links}" if links else ""),
                "alert": {**self.model_dump(mode="json"), "resolved": self.resolved}}


class TenantReceivers(BaseModel):
    """One tenant's receivers; what is left out takes the platform's defaults."""

    webhook_url: str | None = None
    alertmanager: bool = True

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"webhook_url {value!r} must be an http(s) URL")
        return value


class ReceiverConfig(BaseModel):
    """The platform's receivers and each tenant's own (a JSON file, `tenants` keyed by tenant)."""

    alertmanager_url: str | None = None
    webhook_url: str | None = None  # the default webhook of tenants without their own
    tenants: dict[str, TenantReceivers] = Field(default_factory=dict)
    timeout_s: float = Field(5.0, gt=0, le=60)

    _valid_tenants = field_validator("tenants")(lambda cls, value: validated_keys(value))

    @classmethod
    def load(cls, path: Path | None, alertmanager_url: str | None = None,
             webhook_url: str | None = None) -> ReceiverConfig:
        """The file's tenants (if it exists) with the platform's receivers from settings."""
        tenants = {}
        if path is not None and Path(path).exists():
            tenants = json.loads(Path(path).read_text() or "{}").get("tenants", {})
        return cls(alertmanager_url=alertmanager_url, webhook_url=webhook_url, tenants=tenants)

    @staticmethod
    def save_tenant(path: Path, tenant: str, receivers: TenantReceivers) -> None:
        """Set one tenant's receivers in the file (written whole, then renamed into place)."""
        path = Path(path)
        data = json.loads(path.read_text() or "{}") if path.exists() else {}
        data.setdefault("tenants", {})[Tenant(tenant).key] = receivers.model_dump()
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(data, indent=2, sort_keys=True))
        partial.replace(path)

    def targets(self, tenant: str) -> dict[str, str]:
        """Receiver name -> URL for the tenant's alerts."""
        own = self.tenants.get(tenant, TenantReceivers())
        targets = {}
        if self.alertmanager_url and own.alertmanager:
            targets["alertmanager"] = self.alertmanager_url.rstrip("/") + "/api/v2/alerts"
        if webhook := own.webhook_url or self.webhook_url:
            targets["webhook"] = webhook
        return targets


def _post(url: str, body: object, timeout_s: float) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        response.read()


def send(config: ReceiverConfig, alert: Alert, only: set[str] | None = None,
         ) -> tuple[list[str], dict[str, str]]:
    """Deliver the alert to each of the tenant's receivers (or those in `only`): the names
    that took it, and for each that did not, why."""
    delivered, failed = [], {}
    for name, url in config.targets(alert.tenant).items():
        if only is not None and name not in only:
            continue
        body = [alert.alertmanager_payload()] if name == "alertmanager" else (
            alert.webhook_payload())
        try:
            _post(url, body, config.timeout_s)
            delivered.append(name)
        except (urllib.error.URLError, OSError) as exc:
            failed[name] = f"{url}: {exc}"
    return delivered, failed
