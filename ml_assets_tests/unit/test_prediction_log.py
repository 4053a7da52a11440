"""The replica's log buffer writes the same rows as the per-row records it replaced, in the
log of its (tenant, use case)."""

import math

import pyarrow as pa

from ml_assets.serving import prediction_log
from ml_assets.use_case import load

CHURN = load("churn")
FEATURES = CHURN.features


def test_the_buffer_table_equals_the_rows_written_one_by_one():
    buffer = prediction_log.LogBuffer("acme", CHURN)
    matrix = [[float(i + j) for j in range(len(FEATURES))] for i in range(3)]
    matrix[1][2] = math.nan  # a null feature, imputed by the model
    buffer.add("4", "production", 200, 1.5, [None], matrix, [0.1, 0.2, 0.3])
    buffer.add("4", "canary", 200, 2.5, [7, 8], matrix[:2], [0.4, 0.5])
    buffer.add(None, None, 401, 0.1, [None], [], [None])  # refused before routing
    table = buffer.table()
    assert table.schema == prediction_log.schema(CHURN) and len(buffer) == table.num_rows == 6
    rows = table.to_pylist()
    assert [r["status"] for r in rows] == [200, 200, 200, 200, 200, 401]
    assert [r["route"] for r in rows] == ["production"] * 3 + ["canary"] * 2 + [None]
    # int keys are kept as their decimal string: one column fits int and string keys
    assert [r[prediction_log.ENTITY_KEY] for r in rows] == [None, None, None, "7", "8", None]
    assert [r["prediction"] for r in rows] == [0.1, 0.2, 0.3, 0.4, 0.5, None]
    assert rows[1][FEATURES[2]] is None and rows[1][FEATURES[1]] == 2.0
    assert all(rows[5][f] is None for f in FEATURES)
    assert len({r["request_id"] for r in rows}) == 3  # one id per request, not per row
    assert {r["tenant"] for r in rows} == {"acme"} and {r["use_case"] for r in rows} == {"churn"}
    assert rows[0]["ts"].tzinfo is not None


def test_string_keys_and_the_unrouted_log_without_features(tmp_path):
    from ml_assets.resources.object_store import ObjectStore
    from ml_assets.tenants import Tenant

    unrouted = prediction_log.LogBuffer("acme", None)
    unrouted.add(None, None, 404, 0.2, [None], [], [None])
    table = unrouted.table()
    assert table.column_names == prediction_log.schema(None).names
    assert not set(FEATURES) & set(table.column_names)
    assert table.to_pylist()[0]["status"] == 404 and table["use_case"].to_pylist() == [None]
    store = ObjectStore(root=str(tmp_path))
    key = prediction_log.write_buffer(store, unrouted)
    assert key.startswith(f"{prediction_log.UNROUTED}/predictions/date=")
    assert prediction_log.read(store, Tenant("acme"), None)["status"].to_pylist() == [404]
    assert prediction_log.read(store, Tenant("acme"), CHURN).num_rows == 0  # logs kept apart


def test_an_empty_buffer_is_an_empty_table():
    table = prediction_log.LogBuffer("acme", CHURN).table()
    assert isinstance(table, pa.Table) and table.num_rows == 0
