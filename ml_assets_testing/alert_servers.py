"""Alert receivers the tests (and `make dev`) run on loopback: a Slack-compatible webhook that
records what it is sent, and Prometheus Alertmanager (Debian's package) routing to it."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ml_assets_testing.servers import free_port, wait_for_http


class WebhookReceiver:
    """An HTTP server on a free port that keeps every JSON body POSTed to it, per path."""

    def __init__(self) -> None:
        self.received: list[tuple[str, object]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    receiver.received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self, path: str) -> list:
        with self.lock:
            return [body for p, body in self.received if p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def alertmanager_binary() -> str | None:
    return shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


def start_alertmanager(directory: Path, webhook_url: str) -> tuple[str, subprocess.Popen]:
    """Alertmanager on a free port, every alert grouped by tenant and check and sent to
    webhook_url within a second (and again when resolved). Its URL and process."""
    binary = alertmanager_binary()
    if binary is None:
        raise RuntimeError("no Alertmanager: apt-get install prometheus-alertmanager "
                           "(.ci/run and `make test` do)")
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "alertmanager.yml"
    config.write_text(json.dumps({  # YAML is a superset of JSON
        "route": {"receiver": "webhook", "group_by": ["tenant", "check"], "group_wait": "1s",
                  "group_interval": "1s", "repeat_interval": "24h"},
        "receivers": [{"name": "webhook", "webhook_configs": [
            {"url": webhook_url, "send_resolved": True}]}],
    }))
    port = free_port()
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.path={directory / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/-/ready", process, timeout=30)
    return url, process
