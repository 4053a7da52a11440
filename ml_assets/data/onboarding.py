"""A tenant onboarded for a use case with its own files: each feature view's file and the label
file, from a local path or an `s3://bucket/key` URI on the configured object store, checked
against their contracts, then copied into the tenant's data folder all at once.

A file that breaks its contract is refused with the violations, before anything is written: a
tenant is enabled for a use case with every file in place, or not at all."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ml_assets.data import contracts
from ml_assets.data.feature_store import TenantFeatureStore
from ml_assets.data.object_store import ObjectStoreClient
from ml_assets.data.sources import source_file, source_names
from ml_assets.tenants import Tenant
from ml_assets.use_case import UseCase


class OnboardingError(ValueError):
    """Sources that do not match the use case, cannot be read, or break a contract."""


def _fetch(uri: str, object_store: ObjectStoreClient, into: Path) -> None:
    """Copy a local file or an s3://bucket/key object of the configured store to `into`."""
    if uri.startswith("s3://"):
        if not object_store.is_s3:
            raise OnboardingError(f"{uri}: no S3 endpoint is configured "
                                  "(ML_ASSETS_S3_ENDPOINT); give a local path")
        import pyarrow.fs

        try:
            with object_store.filesystem().open_input_stream(uri.removeprefix("s3://")) as src:
                into.write_bytes(src.read())
        except (OSError, pyarrow.ArrowException) as exc:
            raise OnboardingError(f"{uri}: cannot be read from {object_store.endpoint}: "
                                  f"{exc}") from exc
        return
    path = Path(uri).expanduser()
    if not path.is_file():
        raise OnboardingError(f"{uri}: no such file")
    shutil.copyfile(path, into)


def onboard(feast: TenantFeatureStore, object_store: ObjectStoreClient, tenant: Tenant,
            use_case: UseCase, sources: dict[str, str]) -> dict[str, Path]:
    """Enable the tenant for the use case with `sources` ({feature view or label name: path or
    s3:// URI}); the paths the files now have. OnboardingError, with nothing written, when a
    source is missing, unknown, unreadable or breaks its contract."""
    expected = source_names(use_case)
    unknown = sorted(set(sources) - set(expected))
    missing = [name for name in expected if name not in sources]
    if unknown or missing:
        raise OnboardingError(
            f"use case {use_case.name!r} takes exactly the sources {expected}"
            + (f"; unknown: {unknown}" if unknown else "")
            + (f"; missing: {missing}" if missing else ""))
    target = feast.data_dir(tenant, use_case)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{use_case.name}-") as staged:
        staging = Path(staged)
        problems = []
        for name in expected:
            file_name = source_file(use_case, name)
            _fetch(sources[name], object_store, staging / file_name)
            found = contracts.violations(staging / file_name,
                                         contracts.for_source(use_case, name))
            problems += [f"{name} ({sources[name]}): {violation}" for violation in found]
        if problems:
            raise OnboardingError("refused, nothing written:\n  " + "\n  ".join(problems))
        if target.exists():  # re-onboarding replaces the files as a whole
            shutil.rmtree(target)
        staging.rename(target)
        staging.mkdir()  # the context manager removes what it created
    return {name: feast.source_path(tenant, use_case, name) for name in expected}
