"""The Feast side of the hydration benchmark; runs in the Feast virtualenv (bench/peers/setup.sh feast),
imports nothing of this project.

    .venv-feast/bin/python bench/peers/feast_client.py WORKDIR

WORKDIR (written by bench/bench_feast.py) holds ``spec.json`` (Redis address, the feature views: name,
parquet source, fields and dtypes; the ids to read; repetitions) and the parquet sources. This script
writes a Feast repo there (online store: that Redis), applies it, materialises the parquet sources
into Redis, then times ``get_online_features(...).to_dict()`` for the ids, and writes ``feast.json``
(timings) and ``feast_values.npz`` (the values of the last read, in id order, for the equality check).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np


def main(work: Path) -> None:
    spec = json.loads((work / "spec.json").read_text())
    repo = work / "feast_repo"
    repo.mkdir(exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        "project: jaikod_bench\n"
        f"registry: {repo / 'registry.db'}\n"
        "provider: local\n"
        "online_store:\n"
        "  type: redis\n"
        f"  connection_string: \"{spec['redis']}\"\n"
        "offline_store:\n"
        "  type: file\n"
        "entity_key_serialization_version: 3\n")
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Array, Float32, Int32, Int64

    types = {"float32": Float32, "int32": Int32, "int64": Int64, "float32[]": Array(Float32)}
    product = Entity(name="product", join_keys=["product_id"], value_type=ValueType.INT64)
    views = []
    for v in spec["views"]:
        src = FileSource(name=f"{v['name']}_source", path=v["path"], timestamp_field="event_timestamp")
        views.append(FeatureView(name=v["name"], entities=[product], ttl=dt.timedelta(days=30),
                                 schema=[Field(name=f, dtype=types[t]) for f, t in v["fields"].items()],
                                 online=True, source=src))
    store = FeatureStore(repo_path=str(repo))
    store.apply([product, *views])
    t0 = time.perf_counter()
    end = dt.datetime.fromisoformat(spec["materialize_end"])
    store.materialize(start_date=end - dt.timedelta(days=2), end_date=end + dt.timedelta(seconds=1))
    materialize_s = time.perf_counter() - t0
    refs = [f"{v['name']}:{f}" for v in spec["views"] for f in v["fields"]]
    rows = [{"product_id": int(i)} for i in spec["ids"]]
    for _ in range(spec["warmup"]):
        store.get_online_features(features=refs, entity_rows=rows).to_dict()
    lat = []
    out = None
    for _ in range(spec["n"]):
        t0 = time.perf_counter()
        out = store.get_online_features(features=refs, entity_rows=rows).to_dict()
        lat.append((time.perf_counter() - t0) * 1000)
    assert out is not None
    values = {}
    for v in spec["views"]:
        for f, t in v["fields"].items():
            col = out[f]
            if t.endswith("[]"):
                width = next((len(x) for x in col if x is not None), 0)
                values[f] = np.asarray([x if x is not None else [np.nan] * width for x in col], dtype=np.float32)
            else:
                values[f] = np.asarray([x if x is not None else np.nan for x in col], dtype=np.float64)
    np.savez(work / "feast_values.npz", **values)
    import feast

    (work / "feast.json").write_text(json.dumps({
        "feast_version": feast.__version__, "materialize_s": materialize_s, "latencies_ms": lat,
        "features": len(refs), "ids": len(rows),
        "call": "FeatureStore.get_online_features(features=refs, entity_rows=rows).to_dict()"}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
