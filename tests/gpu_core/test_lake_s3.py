"""The lake on S3-compatible object storage (a real moto server on loopback): the ETL reads and writes
``s3://bucket/lake`` through the same code as a local folder, and its outputs equal the local run's."""

from __future__ import annotations

import pickle

import pandas as pd
import pyarrow.fs as pafs
import pytest

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
