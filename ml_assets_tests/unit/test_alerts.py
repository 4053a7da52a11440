"""One alert per breach through real HTTP receivers on loopback, its state in a Dagster
instance's key-value store: fired once, suppressed while it persists, resolved once, and a
receiver that was down gets what it missed on the next evaluation."""

import dagster as dg
import pytest
from pydantic import ValidationError

from ml_assets.alerts.delivery import AlertBook, evaluate
from ml_assets.alerts.receivers import Alert, ReceiverConfig
from ml_assets_testing.alert_servers import WebhookReceiver
from ml_assets_testing.servers import free_port


@pytest.fixture
def receiver():
    server = WebhookReceiver()
    yield server
    server.close()


@pytest.fixture
def book():
    with dg.instance_for_test() as instance:
        yield AlertBook(instance.run_storage.get_cursor_values,
                        instance.run_storage.set_cursor_values)


def drift(version: str = "1", observed: float = 3.1) -> Alert:
    return Alert(tenant="acme", name="prediction_drift", summary="mean prediction moved",
                 observed=observed, threshold=2.0, window_start="2026-11-30T01:00:00+00:00",
                 window_end="2026-11-30T02:00:00+00:00", model_version=version,
                 links={"dagster": "http://dagster/assets/model_monitoring",
                        "mlflow": "http://mlflow/#/models/acme-churn/versions/1"})


def test_a_breach_fires_once_and_resolves_once(receiver, book):
    config = ReceiverConfig(webhook_url=receiver.url + "/hook")
    steps = [(drift(), True, False), (drift(observed=3.4), True, False),  # persists
             (drift(), False, False),  # too little data to judge: nothing
             (drift(), False, True), (drift(), False, True),  # recovered, still fine
             (drift("2"), True, False)]  # a new version breaches: a new alert
    transitions = [evaluate(config, book, alert, breached, passed).transition
                   for alert, breached, passed in steps]
    assert transitions == ["fired", None, None, "resolved", None, "fired"]
    posts = receiver.bodies("/hook")
    assert [p["alert"]["resolved"] for p in posts] == [False, True, False]
    first = posts[0]
    assert first["text"].startswith("[CRITICAL] acme/churn prediction_drift")
    for part in ("observed 3.1 against threshold 2;", "window 2026-11-30T01:00:00+00:00",
                 "model version 1", "<http://mlflow/#/models/acme-churn/versions/1|mlflow>"):
        assert part in first["text"]
    assert posts[1]["alert"]["ends_at"] is not None
    assert posts[1]["alert"]["starts_at"] == first["alert"]["starts_at"]  # the same alert
    assert posts[2]["alert"]["model_version"] == "2"


def test_a_receiver_that_was_down_gets_the_alert_on_the_next_evaluation(receiver, book):
    down = f"http://127.0.0.1:{free_port()}/hook"
    config = ReceiverConfig(webhook_url=down, alertmanager_url=receiver.url)
    first = evaluate(config, book, drift(), breached=True, passed=False)
    assert first.transition == "fired" and first.sent == ["alertmanager"]
    assert set(first.failed) == {"webhook"}
    assert len(receiver.bodies("/api/v2/alerts")) == 1

    config = ReceiverConfig(webhook_url=receiver.url + "/hook", alertmanager_url=receiver.url)
    retry = evaluate(config, book, drift(), breached=True, passed=False)
    assert (retry.transition, retry.sent, retry.failed) == (None, ["webhook"], {})
    assert evaluate(config, book, drift(), breached=True, passed=False).sent == []
    assert len(receiver.bodies("/hook")) == 1
    assert len(receiver.bodies("/api/v2/alerts")) == 1  # not sent twice to Alertmanager
    [[posted]] = receiver.bodies("/api/v2/alerts")
    assert posted["labels"] == {"alertname": "ml_assets_prediction_drift", "tenant": "acme",
                                "use_case": "churn", "check": "prediction_drift",
                                "severity": "critical"}
    assert posted["annotations"]["threshold"] == "2.0"
    assert posted["generatorURL"] == "http://dagster/assets/model_monitoring"
    assert "endsAt" not in posted


def test_each_tenant_has_its_own_receivers(tmp_path):
    path = tmp_path / "receivers.json"
    path.write_text('{"tenants": {"acme": {"webhook_url": "http://acme/hook"}, '
                    '"globex": {"alertmanager": false}}}')
    config = ReceiverConfig.load(path, "http://am:9093", "http://platform/hook")
    assert config.targets("acme") == {"alertmanager": "http://am:9093/api/v2/alerts",
                                      "webhook": "http://acme/hook"}
    assert config.targets("globex") == {"webhook": "http://platform/hook"}
    assert config.targets("initech") == {"alertmanager": "http://am:9093/api/v2/alerts",
                                         "webhook": "http://platform/hook"}
    assert ReceiverConfig.load(tmp_path / "missing.json").targets("acme") == {}
    path.write_text('{"tenants": {"../etc": {}}}')
    with pytest.raises(ValidationError, match="tenant"):
        ReceiverConfig.load(path)


def test_the_cli_sets_shows_and_tests_a_tenants_receivers(receiver, tmp_path, monkeypatch,
                                                          capsys):
    from ml_assets.cli import main

    monkeypatch.setenv("ML_ASSETS_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("ML_ASSETS_ALERTMANAGER_URL", receiver.url)
    assert main(["alerts", "set", "acme", "--webhook", receiver.url + "/acme"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"alertmanager: {receiver.url}/api/v2/alerts", f"webhook: {receiver.url}/acme"]
    assert main(["alerts", "test", "acme"]) == 0
    assert "delivered to alertmanager, webhook" in capsys.readouterr().out
    [posted] = receiver.bodies("/acme")
    assert posted["alert"]["name"] == "test_alert" and posted["text"].startswith("[INFO]")
    assert main(["alerts", "set", "globex", "--no-alertmanager"]) == 0
    assert "has no alert receivers" in capsys.readouterr().out
    assert main(["alerts", "show", "acme"]) == 0  # globex's change kept acme's
    assert f"{receiver.url}/acme" in capsys.readouterr().out
    assert main(["alerts", "set", "acme", "--webhook", "file:///etc/passwd"]) == 2
    assert "must be an http(s) URL" in capsys.readouterr().err
    assert main(["alerts", "set", "Bad_Tenant"]) == 2
