"""The nightly job on a real multi-process Dask cluster (a `dask scheduler` and two `dask worker` processes
on loopback) writes what the local run wrote: the same feature tables, embeddings, boosters and
materialised online features, and its tasks ran on both workers."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis

from batch.dataset import training_set
from batch.etl import features_dir
from batch.nightly import run_nightly
from batch.train import load_ranker
from gpu_core.feature_store import POINTER
from gpu_core.registry import PRODUCTION, RANKER, Registry
from tests.conftest import restore_db

FEATURE_TABLES = ("dims", "user_daily", "product_daily", "context_daily", "user_clicks", "training", "embeddings")


def parquet_files(root: Path) -> dict[str, pd.DataFrame]:
    return {str(p.relative_to(root)): pd.read_parquet(p) for p in sorted(root.rglob("*.parquet"))
            if not any(part.startswith(".") for part in p.relative_to(root).parts)}


def task_prefixes(client) -> dict[str, set[str]]:
    """Per worker: the task-name prefixes in its transition log."""
    def names(dask_worker) -> list[str]:
        return sorted({str(entry[0]).split("-")[0].strip("('") for entry in dask_worker.state.log})

    return {addr: set(v) for addr, v in client.run(names).items()}


def redis_state(url: str, version: bytes) -> dict:
    """Every key and value of the db, the snapshot version replaced by a placeholder (its suffix is random)."""
    r = redis.Redis.from_url(url)
    out = {}
    for k in r.scan_iter(count=10_000):
        kind = r.type(k).decode()
        if kind == "hash":
            v = r.hgetall(k)
            v.pop(b"created_at", None)  # the snapshot's wall-clock stamp
        elif kind == "string":
            v = r.get(k)
        elif kind == "list":
            v = r.lrange(k, 0, -1)
        elif kind == "set":
            v = sorted(r.smembers(k))
        elif kind == "zset":
            v = r.zrange(k, 0, -1, withscores=True)
        else:
            v = kind
        out[k.replace(version, b"V")] = repr(v).replace(repr(version)[2:-1], "V")
    return out


@pytest.fixture()
def cluster_home(tiny_world, tmp_path, monkeypatch, redis_server):
    from gpu_core.device import reset_backend
    from gpu_core.settings import reset_settings

    home = tmp_path / "home"
    lake = home / "lake"
    shutil.copytree(tiny_world.lake, lake, ignore=shutil.ignore_patterns("features"))
    url = redis_server.url.rsplit("/", 1)[0] + "/2"
    redis.Redis.from_url(url).flushdb()
    monkeypatch.setenv("JAIKOD_HOME", str(home))
    monkeypatch.setenv("JAIKOD_REDIS_URL", url)
    monkeypatch.setenv("JAIKOD_DEVICE", os.environ.get("JAIKOD_DEVICE", "cpu"))
    reset_settings()
    reset_backend()
    yield home, lake, url
    redis.Redis.from_url(url).flushdb()
    reset_settings()
    reset_backend()


def test_nightly_on_a_two_worker_cluster_equals_the_local_run(tiny_world, dask_cluster, cluster_home):
    home, lake, url = cluster_home
    results = run_nightly(lake, scheduler=dask_cluster.address, announce=lambda _m: None)
    assert results["etl"] == {**tiny_world.nightly["etl"], "seconds": results["etl"]["seconds"],
                              "events/min": results["etl"]["events/min"]}

    # the work ran in the worker processes, spread over both
    with dask_cluster.client() as client:
        seen = task_prefixes(client)
    assert len(seen) == 2
    assert all("day_aggregates" in names or "_training_partition" in names for names in seen.values()), seen
    assert set().union(*seen.values()) >= {"day_aggregates", "_training_partition", "_fit", "run_embeddings"}

    # 1. every feature table and the embeddings: equal, frame by frame
    local, remote = features_dir(tiny_world.lake), features_dir(lake)
    for table in FEATURE_TABLES:
        a, b = parquet_files(local / table), parquet_files(remote / table)
        assert a and a.keys() == b.keys(), table
        for name in a:
            pd.testing.assert_frame_equal(a[name], b[name], check_exact=True, obj=f"{table}/{name}")

    # 2. the trained boosters: the same trees, so the same predictions on the holdout
    as_of = tiny_world.nightly["etl"]["as_of"]
    models = []
    for h in (tiny_world.home, home):
        os.environ["JAIKOD_HOME"] = str(h)
        from gpu_core.settings import reset_settings

        reset_settings()
        reg = Registry()
        ref = reg.require(RANKER, PRODUCTION)
        models.append(load_ranker(reg.download(ref), ref))
    os.environ["JAIKOD_HOME"] = str(home)
    reset_settings()
    X = training_set(lake, [pd.Timestamp(as_of).date()]).X
    for a, b in zip(models[0].predict(X), models[1].predict(X), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert models[0].ctr.save_raw("json") == models[1].ctr.save_raw("json")
    assert models[0].cvr.save_raw("json") == models[1].cvr.save_raw("json")

    # 3. the materialised online store: the same keys and values (up to the snapshot's version id)
    scratch = url.rsplit("/", 1)[0] + "/3"  # the local nightly's db as it left it (later tests change db 1)
    restore_db(scratch, tiny_world.dump)
    try:
        want = redis_state(scratch, redis.Redis.from_url(scratch).get(POINTER))
    finally:
        redis.Redis.from_url(scratch).flushdb()
    assert len(want) > 10 and want == redis_state(url, redis.Redis.from_url(url).get(POINTER))
