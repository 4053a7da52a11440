"""Where asset values live between steps: Dagster's pickled-file IO manager, taught to write a
run over many tenant partitions (a single-run backfill) as one file per tenant."""

from typing import Any

import dagster as dg
from dagster._core.storage.fs_io_manager import PickledObjectFilesystemIOManager


class TenantFilesIOManager(PickledObjectFilesystemIOManager):
    """One pickle per asset partition. A step over many tenants outputs {tenant: value}, each
    value written to its tenant's file (Dagster's own manager refuses such outputs); reading
    many partitions already gives {tenant: value}."""

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if not context.has_asset_partitions or len(context.asset_partition_keys) == 1:
            return super().handle_output(context, obj)
        paths = self._get_paths_for_partitions(context)
        if not isinstance(obj, dict) or set(obj) != set(paths):
            raise TypeError(f"{context.asset_key.to_user_string()}: a step over partitions "
                            f"{sorted(paths)} must output one value per partition")
        for partition, path in paths.items():
            self.make_directory(path.parent)
            self.dump_to_path(context=context, obj=obj[partition], path=path)
        context.add_output_metadata({"partitions_written": len(paths)})


class TenantFilesystemIOManager(dg.FilesystemIOManager):
    """dg.FilesystemIOManager's configuration, TenantFilesIOManager's behaviour."""

    def create_io_manager(self, context: dg.InitResourceContext) -> TenantFilesIOManager:
        base_dir = self.base_dir or context.instance.storage_directory()
        return TenantFilesIOManager(base_dir=base_dir)
