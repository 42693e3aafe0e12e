"""The data lake's contract: table names and columns, the events table's Arrow schema, and the atomic
writes both sides use (the world generator and the nightly jobs in ``batch``, the stream processor's
archive in ``online``). Readers with validation live in :mod:`batch.lake`.

Layout (Parquet): ``users/``, ``sellers/``, ``products/`` (dimension tables, ``part-*.parquet``) and
``events/date=YYYY-MM-DD/*.parquet`` (hive partitions by the UTC day of the event). A file or folder
is written to a hidden temporary sibling and renamed into place, so a reader never sees a partial
write.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

# The events table: one schema for every writer (world generator, stream archive) and reader.
EVENTS_SCHEMA = pa.schema([
    ("event_id", pa.string()), ("event_type", pa.string()), ("ts", pa.timestamp("ms", tz="UTC")),
    ("user_id", pa.int64()), ("product_id", pa.int64()), ("request_id", pa.string()), ("position", pa.int16()),
    ("model_version", pa.string()), ("session_id", pa.string()), ("device_type", pa.string()),
    ("query", pa.string()),
])
EVENT_FIELDS: tuple[str, ...] = tuple(EVENTS_SCHEMA.names)

TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "users": ("user_id", "age_group", "gender", "home_lat", "home_lon", "max_distance_km", "device_type",
              "created_at"),
    "sellers": ("seller_id", "verified_id", "reports", "joined_at", "banned"),
    "products": ("product_id", "seller_id", "title", "category", "price_thb", "condition_grade", "quality_score",
                 "lat", "lon", "in_stock", "created_at", "image_path"),
    "events": EVENT_FIELDS,
}


def partition_dir(root: Path, day: dt.date) -> Path:
    """The ``date=YYYY-MM-DD`` partition of ``day`` under a table folder ``root``."""
    return Path(root) / f"date={day.isoformat()}"


def partition_date(path: Path) -> dt.date:
    return dt.date.fromisoformat(Path(path).name.split("=", 1)[1])


def events_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Event dicts (``ts`` in epoch ms) -> an Arrow table of :data:`EVENTS_SCHEMA` (extra keys dropped)."""
    return pa.Table.from_pylist([{k: r.get(k) for k in EVENT_FIELDS} for r in rows], schema=EVENTS_SCHEMA)


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temp dir beside ``target``; on success it replaces ``target`` in one rename."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        target.rename(old)
    tmp.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def staged_path(final: Path) -> Path:
    """The hidden temporary sibling a file is written to before its rename to ``final``."""
    return final.parent / f".{final.name}.tmp"


def stage_file(table: pa.Table, final: Path, *, fsync: bool = True) -> Path:
    """Write ``table`` to the staged sibling of ``final`` (fsynced); :func:`commit_file` renames it."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = staged_path(final)
    pq.write_table(table, tmp, compression="zstd")
    if fsync:
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    return tmp


def commit_file(final: Path) -> None:
    """Rename a staged file into place (idempotent once renamed) and make the rename durable."""
    tmp = staged_path(final)
    if tmp.exists():
        os.replace(tmp, final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(table: pa.Table, final: Path) -> Path:
    """Stage and commit in one step: ``final`` appears whole or not at all."""
    stage_file(table, final, fsync=False)
    os.replace(staged_path(final), final)
    return final
