"""`ml-assets alerts set|show|test`: where a tenant's alerts go."""

from __future__ import annotations

import argparse

from ml_assets.alerts.receivers import Alert, ReceiverConfig, TenantReceivers, send
from ml_assets.settings import Settings
from ml_assets.tenants import Tenant


def config(settings: Settings) -> ReceiverConfig:
    return ReceiverConfig.load(settings.alert_receivers_path, settings.alertmanager_url,
                               settings.alert_webhook_url)


def alerts_command(settings: Settings, args: argparse.Namespace) -> str:
    """Set a tenant's receivers, show where its alerts go, or send it a test alert."""
    tenant = Tenant(args.tenant)
    if args.action == "set":
        receivers = TenantReceivers(webhook_url=args.webhook,
                                    alertmanager=not args.no_alertmanager)
        ReceiverConfig.save_tenant(settings.alert_receivers_path, tenant.key, receivers)
    targets = config(settings).targets(tenant.key)
    if args.action == "test":
        alert = Alert(tenant=tenant.key, name="test_alert", severity="info",
                      summary="a test alert from `ml-assets alerts test`")
        sent, failed = send(config(settings), alert)
        if failed:
            raise ValueError(f"not delivered: {failed} (delivered to {sent or 'none'})")
        return f"test alert for {tenant.key} delivered to {', '.join(sent) or 'no receiver'}"
    return "\n".join(f"{name}: {url}" for name, url in targets.items()) or (
        f"tenant {tenant.key} has no alert receivers: set ML_ASSETS_ALERTMANAGER_URL or "
        f"`ml-assets alerts set {tenant.key} --webhook URL`")


def add_commands(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("alerts", help="where a tenant's alerts go")
    group.set_defaults(run=alerts_command)
    action = group.add_subparsers(dest="action", required=True)
    set_ = action.add_parser("set", help="the tenant's own receivers")
    set_.add_argument("tenant")
    set_.add_argument("--webhook", help="a Slack-compatible incoming-webhook URL")
    set_.add_argument("--no-alertmanager", action="store_true",
                      help="keep the tenant's alerts out of the platform's Alertmanager")
    for name, text in (("show", "the receivers the tenant's alerts go to"),
                       ("test", "send the tenant's receivers a test alert")):
        action.add_parser(name, help=text).add_argument("tenant")
