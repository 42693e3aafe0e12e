"""Bad input to the batch jobs: one clear LakeError naming the path/column, and nothing half-written
(no temporary folders, no feature partitions) after the failure; the CLI exits 2 with one line."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from batch.etl import features_dir, run_etl
from batch.lake import TABLE_COLUMNS
from gpu_core.errors import LakeError
from gpu_core.schema import CATEGORIES

DAYS = [dt.date(2026, 10, 1) + dt.timedelta(days=i) for i in range(3)]


def make_lake(root: Path) -> Path:
    """A small valid lake: 20 users, 5 sellers, 40 products, ~200 events a day for 3 days."""
    rng = np.random.default_rng(0)
    t0 = pd.Timestamp("2026-01-01", tz="UTC").as_unit("ms")
    tables = {
        "users": pd.DataFrame({"user_id": np.arange(20, dtype=np.int64), "age_group": "25-34", "gender": "male",
                               "home_lat": 13.7, "home_lon": 100.5, "max_distance_km": np.float32(30),
                               "device_type": "ios", "created_at": t0}),
        "sellers": pd.DataFrame({"seller_id": np.arange(5, dtype=np.int64), "verified_id": True,
                                 "reports": np.int32(0), "joined_at": t0, "banned": False}),
        "products": pd.DataFrame({"product_id": np.arange(40, dtype=np.int64), "seller_id": np.arange(40) % 5,
                                  "title": [f"item {i}" for i in range(40)],
                                  "category": [CATEGORIES[i % len(CATEGORIES)] for i in range(40)],
                                  "price_thb": 100.0 + np.arange(40), "condition_grade": "good",
                                  "quality_score": np.float32(0.5), "lat": 13.7, "lon": 100.5, "in_stock": True,
                                  "created_at": t0, "image_path": ""}),
    }
    for name, df in tables.items():
        assert tuple(df.columns) == TABLE_COLUMNS[name]
        (root / name).mkdir(parents=True)
        df.to_parquet(root / name / "part-0.parquet", index=False)
    for d in DAYS:
        n = 200
        ts = pd.Timestamp(d, tz="UTC").as_unit("ms") + pd.to_timedelta(np.sort(rng.integers(0, 86_400_000, n)),
                                                                        unit="ms")
        ev = pd.DataFrame({"event_id": [f"e{d}-{i}" for i in range(n)],
                           "event_type": rng.choice(["impression", "impression", "impression", "click"], n),
                           "ts": ts, "user_id": rng.integers(0, 20, n), "product_id": rng.integers(0, 40, n),
                           "request_id": [f"r{d}-{i // 4}" for i in range(n)], "position": np.int16(1),
                           "model_version": "x", "session_id": "s", "device_type": "web", "query": ""})
        part = root / "events" / f"date={d.isoformat()}"
        part.mkdir(parents=True)
        ev.to_parquet(part / "part-000.parquet", index=False)
    return root


@pytest.fixture(scope="module")
def good_lake(tmp_path_factory) -> Path:
    return make_lake(tmp_path_factory.mktemp("good_lake"))


@pytest.fixture()
def lake(good_lake, tmp_path) -> Path:
    return Path(shutil.copytree(good_lake, tmp_path / "lake"))


def assert_nothing_written(lake: Path) -> None:
    assert not [p for p in lake.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]
    out = features_dir(lake)
    assert not out.exists() or not any(out.iterdir()), sorted(out.rglob("*"))


def test_good_lake_runs(lake):
    summary = run_etl(lake)
    assert summary.as_of == DAYS[-1] and summary.dates == DAYS
    assert (features_dir(lake) / "training" / f"date={DAYS[0]}").is_dir()
    assert not [p for p in lake.rglob("*") if ".tmp-" in p.name]


@pytest.mark.parametrize("table", ["users", "sellers", "products", "events"])
def test_missing_table(lake, table):
    shutil.rmtree(lake / table)
    with pytest.raises(LakeError) as err:
        run_etl(lake)
    assert str(lake / table) in err.value.message and err.value.field == table
    assert_nothing_written(lake)


def test_table_without_files_or_rows(lake):
    for f in (lake / "users").glob("*.parquet"):
        f.unlink()
    with pytest.raises(LakeError, match="no parquet files") as err:
        run_etl(lake)
    assert str(lake / "users") in err.value.message
    assert_nothing_written(lake)


def test_empty_dimension_table(lake):
    f = next((lake / "products").glob("*.parquet"))
    pd.read_parquet(f).head(0).to_parquet(f, index=False)
    with pytest.raises(LakeError, match="empty") as err:
        run_etl(lake)
    assert str(lake / "products") in err.value.message
    assert_nothing_written(lake)


def test_no_event_partitions(lake):
    for part in (lake / "events").glob("date=*"):
        shutil.rmtree(part)
        part.mkdir()  # empty partition folders
    with pytest.raises(LakeError, match="no event partitions") as err:
        run_etl(lake)
    assert str(lake / "events") in err.value.message
    assert_nothing_written(lake)


@pytest.mark.parametrize("how", ["missing", "no files", "zero rows"])
def test_gap_in_event_partitions(lake, how):
    part = lake / "events" / f"date={DAYS[1]}"
    if how == "missing":
        shutil.rmtree(part)
    elif how == "no files":
        for f in part.glob("*.parquet"):
            f.unlink()
    else:
        f = next(part.glob("*.parquet"))
        pd.read_parquet(f).head(0).to_parquet(f, index=False)
    with pytest.raises(LakeError, match="event partition") as err:
        run_etl(lake)
    assert str(part) in err.value.message
    assert_nothing_written(lake)


@pytest.mark.parametrize(("table", "column"), [("products", "price_thb"), ("users", "gender"),
                                               ("sellers", "joined_at"), ("events", "user_id"),
                                               ("events", "ts")])
def test_missing_column(lake, table, column):
    files = sorted((lake / table).rglob("*.parquet"))
    f = files[-1]  # for events: the last partition only
    df = pd.read_parquet(f)
    df.drop(columns=[column]).to_parquet(f, index=False)
    with pytest.raises(LakeError) as err:
        run_etl(lake)
    assert err.value.field == column and column in err.value.message
    assert str(f.parent) in err.value.message
    assert_nothing_written(lake)


def test_column_of_wrong_type(lake):
    f = next((lake / "events" / f"date={DAYS[0]}").glob("*.parquet"))
    df = pd.read_parquet(f)
    df["ts"] = df["ts"].astype(str)
    df.to_parquet(f, index=False)
    with pytest.raises(LakeError, match="ts") as err:
        run_etl(lake)
    assert err.value.field == "ts" and str(f) in err.value.message
    assert_nothing_written(lake)


@pytest.mark.parametrize("as_of", [DAYS[0] - dt.timedelta(days=1), DAYS[-1] + dt.timedelta(days=1), "2026-13-40"])
def test_as_of_outside_the_lake(lake, as_of):
    with pytest.raises(LakeError) as err:
        run_etl(lake, as_of=as_of)
    assert err.value.field == "as_of"
    if isinstance(as_of, dt.date):
        assert str(lake / "events") in err.value.message and str(as_of) in err.value.message
    assert_nothing_written(lake)


def test_failed_rerun_keeps_previous_output(lake):
    """A failing re-run leaves the previous ETL output as it was."""
    run_etl(lake)
    before = {p.relative_to(lake): p.stat().st_mtime_ns for p in features_dir(lake).rglob("*") if p.is_file()}
    f = next((lake / "events" / f"date={DAYS[-1]}").glob("*.parquet"))
    pd.read_parquet(f).drop(columns=["product_id"]).to_parquet(f, index=False)
    with pytest.raises(LakeError, match="product_id"):
        run_etl(lake)
    after = {p.relative_to(lake): p.stat().st_mtime_ns for p in features_dir(lake).rglob("*") if p.is_file()}
    assert after == before
    assert not [p for p in lake.rglob("*") if ".tmp-" in p.name]


def test_cli_etl_missing_lake_exits_2_with_one_line(jaikod_env, monkeypatch):
    from jaikod_cli import app

    monkeypatch.setenv("JAIKOD_LAKE", str(jaikod_env / "lake"))  # restored after the CLI overrides it
    result = CliRunner().invoke(app, ["batch", "etl", "--lake", "/nonexistent"])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1, result.output
    assert "/nonexistent/events" in lines[0] and "error" in lines[0]


def test_cli_etl_bad_as_of_exits_2(good_lake, jaikod_env, monkeypatch):
    from jaikod_cli import app

    monkeypatch.setenv("JAIKOD_LAKE", str(jaikod_env / "lake"))
    result = CliRunner().invoke(app, ["batch", "etl", "--lake", str(good_lake), "--as-of", "2030-01-01"])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "outside" in lines[0], result.output
    assert not features_dir(good_lake).exists()
