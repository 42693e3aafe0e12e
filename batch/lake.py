"""The Parquet data lake on the batch side: validated reads (one clear error naming the path/column) and
partition writes through the atomic writes of the lake contract (:mod:`gpu_core.lake`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa

from gpu_core.errors import LakeError
from gpu_core.lake import (  # noqa: F401  (re-exported for batch)
    TABLE_COLUMNS,
    atomic_dir,
    lake_path,
    partition_dir,
    read_metadata,
    read_parquet,
    read_schema,
    write_parquet,
)


def table_path(lake: Path, table: str) -> Path:
    p = lake_path(lake) / table
    if not p.exists():
        raise LakeError(f"lake table missing: {p} (build a world with `jaikod world build`)", field=table)
    return p


def read_table(lake: Path, table: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A whole (small) dimension table, with its columns checked."""
    p = table_path(lake, table)
    try:
        schema_names = set(read_schema(next(iter(sorted(p.rglob("*.parquet"))))).names) if p.is_dir() else \
            set(read_schema(p).names)
    except StopIteration:
        raise LakeError(f"lake table {p} has no parquet files", field=table) from None
    wanted = list(columns) if columns is not None else list(TABLE_COLUMNS.get(table, ()))
    missing = [c for c in wanted if c not in schema_names]
    if missing:
        raise LakeError(f"{p}: missing column(s) {', '.join(missing)}", field=missing[0])
    df = read_parquet(p, columns=wanted or None)
    if df.empty:
        raise LakeError(f"lake table {p} is empty (0 rows)", field=table)
    return df


def event_dates(lake: Path) -> list[dt.date]:
    p = table_path(lake, "events")
    dates = []
    for d in sorted(p.glob("date=*")):
        if any(d.glob("*.parquet")):
            dates.append(dt.date.fromisoformat(d.name.split("=", 1)[1]))
    if not dates:
        raise LakeError(f"no event partitions (date=YYYY-MM-DD) with parquet files under {p}", field="events")
    return dates


def check_event_partitions(lake: Path, first: dt.date, last: dt.date, columns: Sequence[str]) -> None:
    """Every ``date=`` partition from ``first`` to ``last`` exists, is readable, has rows and the
    ``columns`` (timestamps and ids with usable types). Cheap: Parquet footers only."""
    root = table_path(lake, "events")
    d = first
    while d <= last:
        part = root / f"date={d.isoformat()}"
        files = sorted(part.glob("*.parquet"))
        if not files:
            raise LakeError(f"missing or empty event partition {part} (the lake's events span {first}..{last})",
                            field="events")
        rows = 0
        for f in files:
            try:
                meta = read_metadata(f)
            except Exception as exc:
                raise LakeError(f"{f}: not a readable parquet file ({exc})", field="events") from None
            schema = meta.schema.to_arrow_schema()
            missing = [c for c in columns if c not in schema.names]
            if missing:
                raise LakeError(f"{f}: missing column(s) {', '.join(missing)}", field=missing[0])
            for col, ok in _EVENT_TYPES.items():
                if col in columns and not ok(schema.field(col).type):
                    raise LakeError(f"{f}: column {col} has type {schema.field(col).type}", field=col)
            rows += meta.num_rows
        if rows == 0:
            raise LakeError(f"empty event partition {part} (0 rows)", field="events")
        d += dt.timedelta(days=1)


_EVENT_TYPES = {
    "ts": lambda t: pa.types.is_timestamp(t) or pa.types.is_integer(t),
    "user_id": pa.types.is_integer,
    "product_id": pa.types.is_integer,
}


def read_events(lake: Path, dates: Sequence[dt.date], columns: Sequence[str]) -> pd.DataFrame:
    """Events of the given date partitions (missing partitions are skipped; empty frame if none)."""
    root = table_path(lake, "events")
    frames = []
    for d in dates:
        part = root / f"date={d.isoformat()}"
        files = sorted(part.glob("*.parquet"))
        if not files:
            continue
        names = set(read_schema(files[0]).names)
        missing = [c for c in columns if c not in names]
        if missing:
            raise LakeError(f"{part}: missing column(s) {', '.join(missing)}", field=missing[0])
        frames.append(read_parquet(files, columns=list(columns)))
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
    return pd.concat(frames, ignore_index=True)


def write_partition(df: pd.DataFrame, root: Path, date: dt.date) -> Path:
    """Write one ``date=YYYY-MM-DD`` partition atomically (replacing any older one)."""
    part = partition_dir(root, date)
    with atomic_dir(part) as tmp:
        write_parquet(df, tmp / "part-0.parquet")
    return part


def parse_date(value: str | dt.date | None, field: str = "as_of") -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise LakeError(f"{field} must be a date YYYY-MM-DD, got {value!r}", field=field) from None
