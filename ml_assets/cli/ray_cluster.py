"""`ml-assets ray up|down`: the local Ray head every step of this state folder connects to."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

from ml_assets.settings import Settings


def reachable(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ray_env() -> dict[str, str]:
    # Token auth on: the cluster and its clients share ~/.ray/auth_token
    return {**os.environ, "RAY_AUTH_MODE": "token"}


def _ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


def ensure_ray_token() -> None:
    """Create ~/.ray/auth_token if this machine has none: `ray start --head` with token auth
    refuses to start without one (only `ray.init` creates it), e.g. on a fresh machine."""
    subprocess.run([_ray_bin(), "get-auth-token", "--generate"],
                   check=True, stdout=subprocess.DEVNULL, env=ray_env())


def ray_up(settings: Settings) -> str:
    """Start (or reuse) the local Ray head every step of this state folder connects to."""
    if settings.ray_address and reachable(settings.ray_address):
        return settings.ray_address
    port = free_port()  # not 6379, Ray's default: Redis holds it on these machines
    ensure_ray_token()
    subprocess.run(
        [_ray_bin(), "start", "--head", f"--port={port}",
         "--node-ip-address=127.0.0.1", f"--num-cpus={settings.ray_num_cpus}",
         "--include-dashboard=false", "--disable-usage-stats"],
        check=True, stdout=subprocess.DEVNULL, env=ray_env(),
    )
    address = f"127.0.0.1:{port}"
    settings.ray_address_file.parent.mkdir(parents=True, exist_ok=True)
    settings.ray_address_file.write_text(address)
    return address


def ray_down(settings: Settings) -> None:
    subprocess.run([_ray_bin(), "stop"], check=False)
    settings.ray_address_file.unlink(missing_ok=True)


def add_commands(commands: argparse._SubParsersAction) -> None:
    ray = commands.add_parser("ray", help="the local Ray head").add_subparsers(
        dest="action", required=True)
    ray.add_parser("up").set_defaults(run=lambda settings, args: ray_up(settings))
    ray.add_parser("down").set_defaults(run=lambda settings, args: ray_down(settings))
