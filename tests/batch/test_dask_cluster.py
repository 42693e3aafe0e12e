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
from gpu_core.feature_store import POINTER
from tests.conftest import local_nightly_state, production_ranker, redis_state

FEATURE_TABLES = ("dims", "user_daily", "product_daily", "context_daily", "user_clicks", "training", "embeddings")


def parquet_files(root: Path) -> dict[str, pd.DataFrame]:
    return {str(p.relative_to(root)): pd.read_parquet(p) for p in sorted(root.rglob("*.parquet"))
            if not any(part.startswith(".") for part in p.relative_to(root).parts)}


def task_prefixes(client) -> dict[str, set[str]]:
    """Per worker: the task-name prefixes in its transition log."""
    def names(dask_worker) -> list[str]:
        return sorted({str(entry[0]).split("-")[0].strip("('") for entry in dask_worker.state.log})

    return {addr: set(v) for addr, v in client.run(names).items()}


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
    models = [production_ranker(h) for h in (tiny_world.home, home)]
    X = training_set(lake, [pd.Timestamp(as_of).date()]).X
    for a, b in zip(models[0].predict(X), models[1].predict(X), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert models[0].ctr.save_raw("json") == models[1].ctr.save_raw("json")
    assert models[0].cvr.save_raw("json") == models[1].cvr.save_raw("json")

    # 3. the materialised online store: the same keys and values (up to the snapshot's version id)
    want = local_nightly_state(tiny_world, url.rsplit("/", 1)[0] + "/3")
    assert len(want) > 10 and want == redis_state(url, redis.Redis.from_url(url).get(POINTER))
