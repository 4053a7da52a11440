"""Object store for checkpoints, artifacts and logs: a local directory, or a bucket on an S3 API.

Plain pydantic, no Dagster: the Serve replica writes its prediction log through it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from ml_assets.tenants import Tenant

if TYPE_CHECKING:
    import pyarrow.fs


class ObjectStoreClient(BaseModel):
    """Every key lives under the tenant's prefix; no method takes a path outside it."""

    root: str  # local directory, used when no endpoint is set
    endpoint: str | None = None  # e.g. http://127.0.0.1:9000 (MinIO, or the tests' S3 server)
    bucket: str = "ml-assets"
    access_key: str | None = None
    secret_key: str | None = None
    region: str = "us-east-1"

    @property
    def is_s3(self) -> bool:
        return self.endpoint is not None

    def filesystem(self) -> pyarrow.fs.FileSystem:
        """The pyarrow filesystem Ray Train writes checkpoints through."""
        import pyarrow.fs

        if not self.is_s3:
            return pyarrow.fs.LocalFileSystem()
        scheme, _, host = self.endpoint.partition("://")
        return pyarrow.fs.S3FileSystem(
            endpoint_override=host,
            scheme=scheme,
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=self.region,
        )

    def _minio(self, timeout_s: float = 5.0):
        import urllib3
        from minio import Minio

        scheme, _, host = self.endpoint.partition("://")
        http = urllib3.PoolManager(timeout=timeout_s, retries=urllib3.Retry(total=1,
                                                                            backoff_factor=0.2))
        return Minio(host, self.access_key, self.secret_key, secure=scheme == "https",
                     region=self.region, http_client=http)

    def ensure_bucket(self) -> None:
        """Create the bucket (S3) or root directory (local) if missing: deployment bootstrap."""
        if not self.is_s3:
            from pathlib import Path

            Path(self.root).mkdir(parents=True, exist_ok=True)
            return
        client = self._minio()
        if not client.bucket_exists(self.bucket):
            client.make_bucket(self.bucket)

    def check(self) -> None:
        """Fail fast, naming the endpoint, when the store cannot be reached: before compute."""
        if not self.is_s3:
            return
        try:
            exists = self._minio().bucket_exists(self.bucket)
        except Exception as exc:  # noqa: BLE001 - any transport error means unreachable
            raise ConnectionError(
                f"object store {self.endpoint} (bucket {self.bucket!r}) is unreachable: {exc}"
            ) from exc
        if not exists:
            raise ConnectionError(f"object store {self.endpoint} has no bucket {self.bucket!r}: "
                                  "run the bootstrap (ObjectStore.ensure_bucket) first")

    def path(self, tenant: Tenant, *parts: str) -> str:
        """A path in `filesystem()` under the tenant's prefix."""
        for part in parts:
            if part.startswith("/") or ".." in part.split("/"):
                raise ValueError(f"object key part {part!r} escapes the tenant prefix")
        base = self.bucket if self.is_s3 else self.root.rstrip("/")
        return "/".join([base, tenant.prefix, *[p.strip("/") for p in parts if p]])

    def uri(self, tenant: Tenant, *parts: str) -> str:
        return f"s3://{self.path(tenant, *parts)}" if self.is_s3 else self.path(tenant, *parts)

    def list(self, tenant: Tenant, *parts: str) -> list[str]:
        """Keys (relative to the tenant prefix) of the files under parts."""
        return [key for key, _ in self.list_sizes(tenant, *parts)]

    def list_sizes(self, tenant: Tenant, *parts: str) -> list[tuple[str, int]]:
        """(key, size in bytes) of the files under parts, sorted by key: one listing."""
        import pyarrow.fs

        fs, base = self.filesystem(), self.path(tenant)
        selector = pyarrow.fs.FileSelector(self.path(tenant, *parts), recursive=True,
                                           allow_not_found=True)
        return sorted(
            (info.path[len(base) + 1:], info.size)
            for info in fs.get_file_info(selector)
            if info.type == pyarrow.fs.FileType.File
        )

    def list_dirs(self, tenant: Tenant, *parts: str) -> list[str]:
        """Keys of the folders directly under parts (S3: the common prefixes)."""
        import pyarrow.fs

        fs, base = self.filesystem(), self.path(tenant)
        selector = pyarrow.fs.FileSelector(self.path(tenant, *parts), recursive=False,
                                           allow_not_found=True)
        return sorted(info.path[len(base) + 1:] for info in fs.get_file_info(selector)
                      if info.type == pyarrow.fs.FileType.Directory)

    def delete(self, tenant: Tenant, keys: list[str]) -> None:
        """Delete these files (S3: 1,000 per request); a file already gone is no error."""
        if not self.is_s3:
            from pathlib import Path

            for key in keys:
                Path(self.path(tenant, key)).unlink(missing_ok=True)
            return
        from minio.deleteobjects import DeleteObject

        prefix = self.path(tenant).split("/", 1)[1]
        errors = list(self._minio().remove_objects(
            self.bucket, (DeleteObject(f"{prefix}/{key}") for key in keys)))
        if errors:
            raise OSError(f"could not delete {len(errors)} objects: {errors[0]}")

    def delete_dir(self, tenant: Tenant, *parts: str) -> None:
        """Delete the folder under parts and everything in it."""
        if not parts or not any(parts):
            raise ValueError("refusing to delete the tenant's whole prefix")
        try:
            self.filesystem().delete_dir(self.path(tenant, *parts))
        except FileNotFoundError:
            pass

    def put_bytes(self, tenant: Tenant, key: str, data: bytes) -> str:
        """Write the object whole and durably: a reader never sees part of it (S3: one PUT;
        local: a synced temporary file renamed over the key)."""
        path = self.path(tenant, key)
        if self.is_s3:
            fs = self.filesystem()
            fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
            with fs.open_output_stream(path) as out:
                out.write(data)
            return path
        import os
        import uuid

        os.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        temporary = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
        with open(temporary, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        return path

    def get_bytes(self, tenant: Tenant, key: str) -> bytes:
        with self.filesystem().open_input_stream(self.path(tenant, key)) as src:
            return src.read()
