"""The scoring step finds a range's contamination tables and earlier judge replies by listing
each version's folder once (``assets.evaluation._stored``), not one lookup per partition."""

from __future__ import annotations

import pyarrow as pa

from assay.storage.parquet import ParquetStore
from assets.evaluation import _stored
from assets.partitions import evaluation_partitions


def test_stored_finds_exactly_the_runs_stored_partitions(tmp_path):
    store = ParquetStore(str(tmp_path / "storage"))
    table = pa.table({"x": [1]})
    stored = [("m@v1", "a"), ("m@v1", "c"), ("m@v10", "a"), ("m@v2", "b"), ("m@v3", "a")]
    for version, scenario in stored:
        store.write("contamination", {"model_version": version, "scenario": scenario}, table)
    # The run: v1 and v2 on a, b, c (v10 and v3 are other versions' folders).
    keys = [
        evaluation_partitions.get_partition_key_from_str(f"{v}|{s}")
        for v in ("m@v1", "m@v2")
        for s in ("a", "b", "c")
    ]
    assert _stored(store, "contamination", keys) == {"m@v1|a", "m@v1|c", "m@v2|b"}
    assert _stored(store, "judge_replies", keys) == set()
