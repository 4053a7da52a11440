"""Data contracts of a tenant's source files, checked before any join or training: readable,
non-empty, the required columns with their types, timezone-aware timestamps, labels in their
domain, no conflicting duplicate (key, timestamp) rows. Each violation names the rule, the
column, how many rows and a few of them. A contract comes from the use case's declaration."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ml_assets.data.sources import source_names
from ml_assets.use_case import UseCase

EXAMPLES = 3  # offending rows shown per violation


@dataclass(frozen=True)
class Contract:
    """What one source file must hold."""

    name: str
    key: str
    key_type: Literal["int", "string"]
    timestamp: str
    numeric: tuple[str, ...] = ()  # nulls allowed (imputed), strings not
    integer: tuple[str, ...] = ()  # numeric and integer-valued where not null
    binary: tuple[str, ...] = ()  # 0 or 1, never null
    real: tuple[str, ...] = ()  # a finite number, never null

    @property
    def columns(self) -> list[str]:
        return [self.key, self.timestamp, *self.numeric, *self.integer, *self.binary,
                *self.real]


def for_source(use_case: UseCase, name: str) -> Contract:
    """The contract of a feature view's file (its name) or of the label file."""
    key, key_type = use_case.key, use_case.entity.key_type
    label = use_case.label
    if name == label.name:
        domain = "binary" if use_case.binary else "real"
        return Contract(name, key, key_type, label.timestamp_field, **{domain: (label.column,)})
    if name not in [view.name for view in use_case.feature_views]:
        raise KeyError(f"use case {use_case.name!r} has no source {name!r}: one of "
                       f"{source_names(use_case)}")
    view = use_case.view(name)
    return Contract(name, key, key_type, view.timestamp_field,
                    numeric=tuple(f for f, kind in view.fields.items() if kind == "float"),
                    integer=tuple(f for f, kind in view.fields.items() if kind == "int"))


class ContractBroken(ValueError):
    """A source file breaks its contract: nothing is joined or trained from it."""


@dataclass(frozen=True)
class Violation:
    rule: str
    column: str | None
    rows: int
    examples: list[dict[str, Any]] = field(default_factory=list)
    detail: str = ""

    def __str__(self) -> str:
        where = f" in {self.column}" if self.column else ""
        shown = f", e.g. {self.examples}" if self.examples else ""
        return f"{self.rule}{where}: {self.detail or f'{self.rows} rows'}{shown}"


def _examples(frame: pd.DataFrame, mask: pd.Series, columns: list[str]) -> list[dict]:
    rows = frame.loc[mask, [c for c in columns if c in frame]].head(EXAMPLES)
    return [{k: (None if pd.isna(v) else str(v) if not isinstance(v, int | float) else v)
             for k, v in row.items()} for row in rows.to_dict("records")]


def violations(path: Path, contract: Contract) -> list[Violation]:
    """Every way the file breaks the contract; empty when it holds."""
    if not path.exists():
        return [Violation("readable", None, 0, detail=f"no file at {path}")]
    if path.stat().st_size == 0:
        return [Violation("readable", None, 0, detail=f"{path.name} is empty (0 bytes)")]
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure: the file is not parquet
        return [Violation("readable", None, 0, detail=f"{path.name} is not readable parquet: "
                          f"{type(exc).__name__}: {str(exc)[:200]}")]
    if frame.empty:
        return [Violation("non_empty", None, 0, detail=f"{path.name} has no rows")]
    missing = [c for c in contract.columns if c not in frame]
    if missing:
        return [Violation("required_columns", ", ".join(missing), len(frame),
                          detail=f"missing columns {missing}; the file has {list(frame)}")]
    found = _key_and_time(frame, contract)
    for column in contract.numeric:
        found += _numeric(frame, column, contract)
    for column in contract.integer:
        found += _numeric(frame, column, contract) or _integer(frame, column, contract)
    for column in contract.binary:
        found += _binary(frame, column, contract)
    for column in contract.real:
        found += _real(frame, column, contract)
    return found + _conflicting_duplicates(frame, contract)


def _key_and_time(frame: pd.DataFrame, contract: Contract) -> list[Violation]:
    found = []
    key = frame[contract.key]
    if contract.key_type == "int" and not pd.api.types.is_integer_dtype(key):
        bad = pd.to_numeric(key, errors="coerce").isna() | (
            pd.to_numeric(key, errors="coerce") % 1 != 0)
        found.append(Violation("column_types", contract.key, int(bad.sum()),
                               _examples(frame, bad, [contract.key]),
                               f"{int(bad.sum())} rows are not integer keys ({key.dtype})"))
    elif contract.key_type == "string" and not pd.api.types.is_string_dtype(key):
        bad = ~key.map(lambda v: isinstance(v, str)) & key.notna()
        found.append(Violation("column_types", contract.key, int(bad.sum()),
                               _examples(frame, bad, [contract.key]),
                               f"{int(bad.sum())} rows are not string keys ({key.dtype})"))
    stamps = frame[contract.timestamp]
    if not pd.api.types.is_datetime64_any_dtype(stamps):
        found.append(Violation("column_types", contract.timestamp, len(frame),
                               _examples(frame, stamps.notna(), [contract.timestamp]),
                               f"not timestamps ({stamps.dtype})"))
    elif getattr(stamps.dt, "tz", None) is None:
        found.append(Violation("timezone", contract.timestamp, len(frame),
                               _examples(frame, stamps.notna(), [contract.key,
                                                                  contract.timestamp]),
                               "timestamps without a timezone: store them timezone-aware "
                               "(e.g. UTC)"))
    nulls = stamps.isna() | key.isna()
    if nulls.any():
        found.append(Violation("not_null", f"{contract.key}, {contract.timestamp}",
                               int(nulls.sum()),
                               _examples(frame, nulls, [contract.key, contract.timestamp])))
    return found


def _numeric(frame: pd.DataFrame, column: str, contract: Contract) -> list[Violation]:
    values = frame[column]
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return []
    bad = pd.to_numeric(values, errors="coerce").isna() & values.notna()
    return [Violation("column_types", column, int(bad.sum()),
                      _examples(frame, bad, [contract.key, contract.timestamp, column]),
                      f"{int(bad.sum())} values are not numbers ({values.dtype})")]


def _integer(frame: pd.DataFrame, column: str, contract: Contract) -> list[Violation]:
    values = frame[column]
    if pd.api.types.is_integer_dtype(values):
        return []
    bad = values.notna() & (values % 1 != 0)  # 2.5, inf; a null is a missing value
    if not bad.any():
        return []
    return [Violation("column_types", column, int(bad.sum()),
                      _examples(frame, bad, [contract.key, contract.timestamp, column]),
                      f"{int(bad.sum())} values are not integers (an int field)")]


def _binary(frame: pd.DataFrame, column: str, contract: Contract) -> list[Violation]:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = ~values.isin([0, 1])  # nulls, NaN, strings and anything but 0 / 1
    if not bad.any():
        return []
    return [Violation("label_domain", column, int(bad.sum()),
                      _examples(frame, bad, [contract.key, contract.timestamp, column]),
                      f"{int(bad.sum())} labels are not 0 or 1 (null included)")]


def _real(frame: pd.DataFrame, column: str, contract: Contract) -> list[Violation]:
    values = frame[column]
    if pd.api.types.is_bool_dtype(values):
        numbers = pd.Series(np.nan, index=frame.index)
    else:
        numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    bad = ~np.isfinite(numbers)  # nulls, NaN, inf, strings and booleans
    if not bad.any():
        return []
    return [Violation("label_domain", column, int(bad.sum()),
                      _examples(frame, bad, [contract.key, contract.timestamp, column]),
                      f"{int(bad.sum())} labels are not finite numbers (null included)")]


def _conflicting_duplicates(frame: pd.DataFrame, contract: Contract) -> list[Violation]:
    keys = [contract.key, contract.timestamp]
    duplicated = frame.duplicated(keys, keep=False)
    if not duplicated.any():
        return []
    values = [c for c in contract.columns if c not in keys]
    groups = frame[duplicated].astype({c: "string" for c in values}).groupby(keys)[values]
    conflicting = groups.nunique(dropna=False).gt(1).any(axis=1)
    clashes = conflicting[conflicting].index
    if not len(clashes):
        return []  # exact repeats: the same fact twice
    mask = frame.set_index(keys).index.isin(clashes)
    return [Violation("conflicting_duplicates", ", ".join(keys), int(mask.sum()),
                      _examples(frame, pd.Series(mask, index=frame.index), contract.columns),
                      f"{len(clashes)} ({contract.key}, {contract.timestamp}) pairs carry "
                      f"different values in {int(mask.sum())} rows")]
