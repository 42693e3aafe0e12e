"""The lake and the artifacts on S3-compatible object storage (a real moto server on loopback): the ETL and the
whole nightly read and write ``s3://bucket/lake`` (and publish the index versions to ``s3://bucket/artifacts``)
through the same code as a local folder, their outputs equal the local runs', and the ranking service that
downloads the indexes from the store serves the feed of the all-local run."""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import pytest
import redis

from batch.etl import features_dir, run_etl
from gpu_core.lake import LakePath, filesystem, lake_path, read_parquet
from gpu_core.settings import get_settings, reset_settings
from tests.support.lake import copy_lake

ETL_TABLES = ("dims", "user_daily", "product_daily", "context_daily", "user_clicks", "training")


def parquet_tables(root) -> dict[str, object]:
    """Every visible Parquet file under ``root`` (a folder or an s3 prefix), by relative path."""
    out = {}
    for p in sorted(root.rglob("*.parquet")):
        rel = str(p.relative_to(root))
        if not any(part.startswith(".") for part in rel.split("/")):
            out[rel] = read_parquet(p)
    return out


def test_lake_path_is_a_local_path_or_an_object_store_path(s3_bucket):
    assert str(lake_path("/tmp/x")) == "/tmp/x" and not isinstance(lake_path("/tmp/x"), LakePath)
    p = lake_path(f"s3://{s3_bucket}/lake") / "events" / "date=2026-01-01"
    assert isinstance(p, LakePath) and p.name == "date=2026-01-01" and p.parent.name == "events"
    assert p.bucket == s3_bucket and p.key == "lake/events/date=2026-01-01"
    assert not p.exists()
    (p / "a.txt").write_text("hello")
    assert p.is_dir() and (p / "a.txt").is_file() and (p / "a.txt").read_text() == "hello"
    assert [c.name for c in p.glob("*.txt")] == ["a.txt"] and list(p.glob("*.parquet")) == []
    q = pickle.loads(pickle.dumps(p))  # Dask tasks carry lake paths to worker processes
    assert q == p and (q / "a.txt").read_text() == "hello"
    p.rename(p.parent / "date=2026-01-02")
    assert not p.exists() and (p.parent / "date=2026-01-02" / "a.txt").read_text() == "hello"
    assert get_settings().lake_dir.__class__.__name__ == "PosixPath"  # default lake stays local
    with pytest.raises(ValueError, match="unsupported lake URL"):
        lake_path("gs://bucket/lake")


def test_etl_on_s3_equals_the_local_run(tiny_world, s3_bucket, tmp_path, monkeypatch):
    """The ETL over the tiny world's last 8 days, once in a local folder and once on ``s3://bucket/lake``."""
    local = copy_lake(tiny_world.lake, tmp_path / "lake")
    monkeypatch.setenv("JAIKOD_HOME", str(tmp_path / "home"))
    want_summary = run_etl(local)
    monkeypatch.setenv("JAIKOD_LAKE", f"s3://{s3_bucket}/lake")
    reset_settings()
    lake = get_settings().lake_dir
    assert isinstance(lake, LakePath)
    fs, root = filesystem(lake)
    for table in ("users", "sellers", "products", "events"):  # the raw tables, uploaded as they are
        pafs.copy_files(str(local / table), f"{root}/{table}", destination_filesystem=fs)
    summary = run_etl(lake)
    assert (summary.as_of, summary.events, summary.training_rows) == \
        (want_summary.as_of, want_summary.events, want_summary.training_rows)
    assert summary.training_rows > 0
    assert (features_dir(lake) / "_as_of").read_text() == summary.as_of.isoformat()
    assert not any(tmp_path.rglob("*s3:*"))  # nothing of the s3 lake went to local disk
    for table in ETL_TABLES:
        want = parquet_tables(features_dir(local) / table)
        got = parquet_tables(features_dir(lake) / table)
        assert want and want.keys() == got.keys(), table
        for name, df in want.items():
            pd.testing.assert_frame_equal(df, got[name], check_exact=True, obj=f"{table}/{name}")


NIGHTLY_TABLES = (*ETL_TABLES, "embeddings")


def feeds(users: list[int]) -> tuple[list[dict], object]:
    """``POST /v1/feed`` for each user from the ranking app (the settings in the environment), and its indexes."""
    from fastapi.testclient import TestClient

    from online.app import create_app

    reset_settings()
    with TestClient(create_app(refresher=False, services=False)) as client:
        out = []
        for user in users:
            r = client.post("/v1/feed", json={"user_id": user})
            assert r.status_code == 200, r.text
            out.append(r.json())
        return out, client.app.state.services.state.indexes


def ranking(feed: dict) -> list[tuple]:
    return [(i["product_id"], i["position"], i["score"], i["sponsored"], i["title"]) for i in feed["items"]]


def test_nightly_on_s3_equals_the_local_run(tiny_world, s3_bucket, tmp_path, monkeypatch, redis_server):
    """The whole nightly (etl -> embeddings -> train -> evaluate -> register -> materialise) on an S3 copy of
    the tiny world's raw lake, with the artifacts folder on S3 too, writes the features, embeddings, title
    space, boosters and online store that the session's local nightly wrote, publishes the index version to
    the bucket (MLflow stays in the local home), and the ranking app, which downloads that version into its
    local cache, serves the same feeds as the all-local run."""
    from batch.dataset import training_set
    from batch.nightly import run_nightly
    from gpu_core.device import backend
    from gpu_core.feature_store import POINTER
    from gpu_core.registry import PRODUCTION, Registry
    from online.state import ModelHolder
    from tests.conftest import _free_port as free_port
    from tests.conftest import local_nightly_state, production_ranker, redis_state, restore_db
    from tests.online.conftest import known_users

    base = redis_server.url.rsplit("/", 1)[0]
    url = f"{base}/4"
    redis.Redis.from_url(url).flushdb()
    home = tmp_path / "home"
    for k, v in {"JAIKOD_HOME": str(home), "JAIKOD_REDIS_URL": url, "JAIKOD_LAKE": f"s3://{s3_bucket}/lake",
                 "JAIKOD_ARTIFACTS": f"s3://{s3_bucket}/artifacts",
                 "JAIKOD_DEVICE": os.environ.get("JAIKOD_DEVICE", "cpu")}.items():
        monkeypatch.setenv(k, v)
    reset_settings()
    lake = get_settings().lake_dir
    assert isinstance(lake, LakePath)
    fs, root = filesystem(lake)
    for table in ("users", "sellers", "products", "events"):
        pafs.copy_files(str(tiny_world.lake / table), f"{root}/{table}", destination_filesystem=fs)
    try:
        results = run_nightly(lake, announce=lambda _m: None)
        assert results["etl"] == {**tiny_world.nightly["etl"], "seconds": results["etl"]["seconds"],
                                  "events/min": results["etl"]["events/min"]}
        assert results["train"]["version"] and results["train"]["promoted_to"] == "production"
        assert not (home / "lake").exists() and not any(tmp_path.rglob("*.parquet"))  # the lake stayed on S3

        # 1. features and embeddings (and the cold-start title space), frame by frame and byte by byte
        local = features_dir(tiny_world.lake)
        for table in NIGHTLY_TABLES:
            want, got = parquet_tables(local / table), parquet_tables(features_dir(lake) / table)
            assert want and want.keys() == got.keys(), table
            for name, df in want.items():
                pd.testing.assert_frame_equal(df, got[name], check_exact=True, obj=f"{table}/{name}")
        space = "embeddings/title_space.npz"
        assert (features_dir(lake) / space).read_bytes() == (local / space).read_bytes()

        # 2. the registered model: the same trees, so the same predictions on the holdout
        as_of = dt.date.fromisoformat(results["etl"]["as_of"])
        want_model, got_model = production_ranker(tiny_world.home), production_ranker(home)
        assert got_model.ctr.save_raw("json") == want_model.ctr.save_raw("json")
        assert got_model.cvr.save_raw("json") == want_model.cvr.save_raw("json")
        X = training_set(lake, [as_of]).X
        assert len(X) > 0
        for a, b in zip(want_model.predict(X), got_model.predict(X), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

        # 3. the materialised online store (up to the snapshot's version id)
        want = local_nightly_state(tiny_world, f"{base}/5")
        version = redis.Redis.from_url(url).get(POINTER)
        assert len(want) > 10 and want == redis_state(url, version)
        version = version.decode()

        # 4. the index version is on S3 (CURRENT names it, its manifest's checksums match the local build's
        # files), nothing of it in the local home; the app downloads it and serves the all-local feeds
        store = lake_path(f"s3://{s3_bucket}/artifacts/index")
        assert get_settings().index_store == store and (store / "CURRENT").read_text() == version
        local_index = tiny_world.home / "artifacts" / "index"
        local_version = (local_index / "CURRENT").read_text().strip()
        got_files = json.loads((store / version / "manifest.json").read_text())["files"]
        assert got_files == json.loads((local_index / local_version / "manifest.json").read_text())["files"]
        assert {p.relative_to(store / version) for p in (store / version).rglob("*")
                if p.is_file()} == {*got_files, "manifest.json"}
        assert not (home / "artifacts" / "index").exists()
        users = known_users(url, 3)
        got, indexes = feeds(users)
        assert indexes.version == version and indexes.error is None and indexes.refused is None
        assert (home / "artifacts" / "cache" / "index" / version / "manifest.json").is_file()
        # the model cache went to the bucket too; with the registry unreachable at start, a fresh machine
        # (empty local folders) serves the same production model from it
        assert get_settings().model_cache_dir == lake_path(f"s3://{s3_bucket}/artifacts/model_cache")
        assert not (home / "artifacts" / "model_cache").exists()
        dead = Registry(settings=get_settings().model_copy(update={"mlflow_uri": f"http://127.0.0.1:{free_port()}"}))
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            mp.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
            holder = ModelHolder(dead, backend(), get_settings().model_cache_dir, tmp_path / "fresh")
            holder.refresh()
        assert holder.source == "cache" and holder.get(PRODUCTION).label == got_model.label
        assert holder.get(PRODUCTION).ctr.save_raw("json") == got_model.ctr.save_raw("json")
        for k in ("JAIKOD_LAKE", "JAIKOD_ARTIFACTS"):  # the all-local run: the tiny world's home and Redis db
            monkeypatch.delenv(k)
        monkeypatch.setenv("JAIKOD_HOME", str(tiny_world.home))
        monkeypatch.setenv("JAIKOD_REDIS_URL", f"{base}/5")
        restore_db(f"{base}/5", tiny_world.dump)
        want_feeds, local_indexes = feeds(users)
        assert local_indexes.version == local_version
        for g, w in zip(got, want_feeds, strict=True):
            assert not {"vector_index_down", "keyword_index_down", "redis_down"} & set(g["fallbacks_used"])
            assert len(g["items"]) > 0 and ranking(g) == ranking(w)
            assert all(i["title"] for i in g["items"])  # the catalogue was read from the S3 lake
            assert g["fallbacks_used"] == w["fallbacks_used"]
    finally:
        redis.Redis.from_url(url).flushdb()
        redis.Redis.from_url(f"{base}/5").flushdb()


def test_a_folder_published_to_s3_is_fetched_whole_or_not_at_all(s3_bucket, tmp_path):
    """publish_dir: nothing reaches the store when the block fails; fetch_dir: a complete local copy (reused
    once there), FileNotFoundError for a version that was never published, and a local folder is itself."""
    from gpu_core.lake import fetch_dir, publish_dir

    store = lake_path(f"s3://{s3_bucket}/artifacts/index")
    with pytest.raises(RuntimeError), publish_dir(store / "v0") as tmp:
        (tmp / "vectors.bin").write_bytes(b"half")
        raise RuntimeError("the build failed")
    assert not (store / "v0").exists()
    with publish_dir(store / "v1", last=("manifest.json",)) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "a.bin").write_bytes(b"\x00" * 1000)
        (tmp / "manifest.json").write_text("{}")
    assert sorted(p.relative_to(store / "v1") for p in (store / "v1").rglob("*") if p.is_file()) == \
        ["manifest.json", "sub/a.bin"]
    cache = tmp_path / "cache"
    got = fetch_dir(store / "v1", cache / "v1")
    assert got == cache / "v1" and (got / "sub" / "a.bin").read_bytes() == b"\x00" * 1000
    assert [p.name for p in cache.iterdir()] == ["v1"]  # no temporary sibling left
    (store / "v1" / "sub" / "a.bin").unlink()
    assert fetch_dir(store / "v1", cache / "v1") == got and (got / "sub" / "a.bin").is_file()  # reused
    with publish_dir(store / "flat") as tmp:  # files at the top only
        (tmp / "a.bin").write_bytes(b"flat")
    assert (fetch_dir(store / "flat", cache / "flat") / "a.bin").read_bytes() == b"flat"
    with pytest.raises(FileNotFoundError):
        fetch_dir(store / "v2", cache / "v2")
    assert not (cache / "v2").exists()
    assert fetch_dir(tmp_path / "local", cache / "x") == tmp_path / "local"
