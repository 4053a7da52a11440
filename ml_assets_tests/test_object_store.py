"""The object store on a local directory and on a real S3-protocol server (moto_server)."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from ml_assets.resources.object_store import ObjectStore
from ml_assets.tenants import Tenant
from ml_assets_tests.conftest import free_port

ACME, GLOBEX = Tenant("acme"), Tenant("globex")


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto_server on a free loopback port, stopped (and its data gone) at the end."""
    import urllib.request

    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.2)
    yield endpoint
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> ObjectStore:
    if request.param == "local":
        return ObjectStore(root=str(tmp_path / "objects"))
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"test-{tmp_path.name.lower().replace('_', '-')[-40:]}"
    s3 = ObjectStore(root=str(tmp_path), endpoint=endpoint, bucket=bucket,
                     access_key="testing", secret_key="testing")
    return s3


def test_round_trip_and_listing_stay_in_the_tenant_prefix(store):
    store.ensure_bucket()
    store.put_bytes(ACME, "checkpoints/run1/epoch_0000/state.pt", b"acme-0")
    store.put_bytes(ACME, "checkpoints/run1/epoch_0001/state.pt", b"acme-1")
    store.put_bytes(GLOBEX, "checkpoints/run9/epoch_0000/state.pt", b"globex-0")
    assert store.get_bytes(ACME, "checkpoints/run1/epoch_0001/state.pt") == b"acme-1"
    assert store.list(ACME, "checkpoints") == [
        "checkpoints/run1/epoch_0000/state.pt", "checkpoints/run1/epoch_0001/state.pt"]
    assert store.list(GLOBEX) == ["checkpoints/run9/epoch_0000/state.pt"]
    with pytest.raises(FileNotFoundError):
        store.get_bytes(GLOBEX, "checkpoints/run1/epoch_0000/state.pt")


@pytest.mark.parametrize("key", ["../globex/checkpoints/x", "/etc/passwd", "a/../../b"])
def test_keys_cannot_escape_the_tenant_prefix(key):
    store = ObjectStore(root="/tmp/never-written")
    with pytest.raises(ValueError, match="escapes the tenant prefix"):
        store.put_bytes(ACME, key, b"x")


def test_s3_paths_and_uris_name_the_bucket_and_prefix():
    store = ObjectStore(root="/unused", endpoint="http://127.0.0.1:9", bucket="ml")
    assert store.path(ACME, "checkpoints") == "ml/tenants/acme/checkpoints"
    assert store.uri(ACME, "checkpoints") == "s3://ml/tenants/acme/checkpoints"

