"""The Feast objects of a use case (its entity and one feature view per declared view), and the
same objects as the definitions file of a Feast repo. Imported only inside resource methods:
feast is slow to import."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float64, Int64
from feast.value_type import ValueType

from ml_assets.use_case import FeatureView as ViewSpec
from ml_assets.use_case import UseCase

DEFINITIONS_FILE = "features.py"
VALUE_TYPES = {"int": ValueType.INT64, "string": ValueType.STRING}
# float fields stay Float64 so a missing value is NaN in the join, as before use cases
DTYPES = {"float": Float64, "int": Int64}
DTYPE_NAMES = {"float": "Float64", "int": "Int64"}


def entity(use_case: UseCase) -> Entity:
    return Entity(name=use_case.entity.name, join_keys=[use_case.key],
                  value_type=VALUE_TYPES[use_case.entity.key_type],
                  description=f"The {use_case.entity.name} of use case {use_case.name}.")


def feature_view(use_case: UseCase, view: ViewSpec, path: Path) -> FeatureView:
    """One declared view, read from one tenant's file; a row older than the ttl is not joined."""
    return FeatureView(
        name=view.name,
        entities=[entity(use_case)],
        ttl=timedelta(days=view.ttl_days),
        schema=[Field(name=name, dtype=DTYPES[kind]) for name, kind in view.fields.items()],
        source=FileSource(name=f"{view.name}_source", path=str(path),
                          timestamp_field=view.timestamp_field),
        online=True,
    )


def feast_objects(use_case: UseCase, paths: dict[str, Path]) -> list[Entity | FeatureView]:
    """The entity and every feature view; paths: {view name: the tenant's file}."""
    return [entity(use_case),
            *(feature_view(use_case, view, paths[view.name]) for view in use_case.feature_views)]


def definitions(use_case: UseCase, paths: dict[str, Path], tenant_key: str) -> str:
    """The Python file of a Feast repo defining the same objects as feast_objects."""
    spec = use_case.entity
    lines = [
        f'"""Feast definitions of use case {use_case.name!r} for tenant {tenant_key!r}.',
        "",
        "Written by ml_assets (TenantFeatureStore.apply) from the use case's defs.yaml:",
        'edit the declaration, not this file."""',
        "",
        "from datetime import timedelta",
        "",
        "from feast import Entity, FeatureView, Field, FileSource",
        "from feast.types import Float64, Int64",
        "from feast.value_type import ValueType",
        "",
        f"entity_{spec.name} = Entity(",
        f"    name={spec.name!r},",
        f"    join_keys=[{spec.join_key!r}],",
        f"    value_type=ValueType.{VALUE_TYPES[spec.key_type].name},",
        f"    description={entity(use_case).description!r},",
        ")",
    ]
    for view in use_case.feature_views:
        fields = "".join(f"\n        Field(name={name!r}, dtype={DTYPE_NAMES[kind]}),"
                         for name, kind in view.fields.items())
        lines += [
            "",
            f"view_{view.name} = FeatureView(",
            f"    name={view.name!r},",
            f"    entities=[entity_{spec.name}],",
            f"    ttl=timedelta(days={view.ttl_days}),",
            f"    schema=[{fields}\n    ],",
            "    source=FileSource(",
            f"        name={view.name + '_source'!r},",
            f"        path={str(paths[view.name])!r},",
            f"        timestamp_field={view.timestamp_field!r},",
            "    ),",
            "    online=True,",
            ")",
        ]
    return "\n".join(lines) + "\n"
