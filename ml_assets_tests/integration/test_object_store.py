"""The object store on a local directory and on a real S3-protocol server (moto_server)."""

import pytest

from ml_assets.resources.object_store import ObjectStore
from ml_assets.tenants import Tenant
from ml_assets_testing.servers import free_port, s3_store

ACME, GLOBEX = Tenant("acme"), Tenant("globex")


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> ObjectStore:
    if request.param == "local":
        return ObjectStore(root=str(tmp_path / "objects"))
    bucket = f"test-{tmp_path.name.lower().replace('_', '-')[-40:]}"
    return s3_store(request.getfixturevalue("s3_endpoint"), bucket)


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



def test_an_unreachable_store_is_named_in_the_error():
    store = s3_store(f"http://127.0.0.1:{free_port()}", "ml-assets")
    with pytest.raises(ConnectionError, match=r"object store http://127\.0\.0\.1:\d+ .*unreach"):
        store.check()


def test_a_missing_bucket_is_named(s3_endpoint):
    with pytest.raises(ConnectionError, match="no bucket 'never-created'"):
        s3_store(s3_endpoint, "never-created").check()
