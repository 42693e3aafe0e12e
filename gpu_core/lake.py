"""The data lake's contract: table names and columns, the events table's Arrow schema, and the atomic
writes both sides use (the world generator and the nightly jobs in ``batch``, the stream processor's
archive in ``online``). Readers with validation live in :mod:`batch.lake`.

Layout (Parquet): ``users/``, ``sellers/``, ``products/`` (dimension tables, ``part-*.parquet``) and
``events/date=YYYY-MM-DD/*.parquet`` (hive partitions by the UTC day of the event). A file or folder
is written to a hidden temporary sibling and renamed into place, so a reader never sees a partial
write.

Where the lake lives: a local folder (a :class:`pathlib.Path`) or an ``s3://bucket/prefix`` URL on any
S3-compatible object store (a :class:`LakePath` over pyarrow's ``S3FileSystem``; endpoint and region from
settings ``s3_endpoint_url`` / ``s3_region``, credentials from the usual ``AWS_*`` variables).
:func:`lake_path` turns either into a path with the same pathlib subset, and every read and write below
goes through :func:`filesystem` (pyarrow's local or S3 filesystem), so the lake code is one code path
for both. On object storage an object appears whole or not at all (each PUT is atomic); a folder
"renamed" into place is moved object by object, so a reader may see a replaced multi-file folder
(``features/dims``) half old, half new for the moves' duration — one-file partitions never.

    >>> p = lake_path("s3://jaikod/lake") / "events"
    >>> [d.name for d in p.glob("date=*")]
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fnmatch
import functools
import os
import posixpath
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
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
    return lake_path(root) / f"date={day.isoformat()}"


def partition_date(path: Path) -> dt.date:
    return dt.date.fromisoformat(lake_path(path).name.split("=", 1)[1])


def events_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Event dicts (``ts`` in epoch ms) -> an Arrow table of :data:`EVENTS_SCHEMA` (extra keys dropped)."""
    return pa.Table.from_pylist([{k: r.get(k) for k in EVENT_FIELDS} for r in rows], schema=EVENTS_SCHEMA)


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temp dir beside ``target``; on success it replaces ``target`` in one rename (on object
    storage: object by object, see the module's docstring)."""
    target = lake_path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        remove_tree(tmp)
        raise
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        target.rename(old)
    tmp.rename(target)
    if old is not None:
        remove_tree(old)


def staged_path(final: Path) -> Path:
    """The hidden temporary sibling a file is written to before its rename to ``final``."""
    return final.parent / f".{final.name}.tmp"


def write_table(table: pa.Table, path: AnyPath) -> AnyPath:
    """One Parquet file (zstd) on either filesystem, written in place (no staging: for a folder that is
    itself staged, or an object store, where one PUT is atomic)."""
    fs, where = filesystem(path)
    pq.write_table(table, where, filesystem=fs, compression="zstd")
    return path


def stage_file(table: pa.Table, final: AnyPath, *, fsync: bool = True) -> AnyPath:
    """Write ``table`` to the staged sibling of ``final`` (fsynced); :func:`commit_file` renames it.
    On object storage the staged sibling is one object PUT: durable once this returns (no fsync), and
    hidden from readers (``.*.tmp`` is no ``*.parquet``)."""
    tmp = staged_path(final)
    if isinstance(final, LakePath):
        return write_table(table, tmp)
    final.parent.mkdir(parents=True, exist_ok=True)
    write_table(table, tmp)
    if fsync:
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    return tmp


def commit_file(final: AnyPath) -> None:
    """Rename a staged file into place (idempotent once renamed) and make the rename durable. On object
    storage: a server-side copy of the staged object to ``final`` (the object appears whole or not at all,
    durable once the copy returns), then the staged one is deleted."""
    tmp = staged_path(final)
    if isinstance(final, LakePath):
        if tmp.exists():
            final.fs.move(tmp.path, final.path)
        elif not final.exists():
            raise FileNotFoundError(f"neither {tmp} nor {final} exists")
        return
    if tmp.exists():
        os.replace(tmp, final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(table: pa.Table, final: AnyPath) -> AnyPath:
    """Stage and commit in one step: ``final`` appears whole or not at all."""
    if isinstance(final, LakePath):
        return write_table(table, final)  # one PUT is atomic
    stage_file(table, final, fsync=False)
    os.replace(staged_path(final), final)
    return final


# ------------------------------------------------------------------------------------------------
# Where the lake lives: local disk or S3-compatible object storage, behind one filesystem interface
@functools.lru_cache(maxsize=8)
def _s3(endpoint_url: str | None, region: str) -> pafs.S3FileSystem:
    kwargs: dict[str, Any] = {"region": region}
    if endpoint_url:
        u = urlparse(endpoint_url if "://" in endpoint_url else f"https://{endpoint_url}")
        kwargs.update(endpoint_override=u.netloc, scheme=u.scheme)
    return pafs.S3FileSystem(**kwargs)


def s3_filesystem() -> pafs.S3FileSystem:
    """pyarrow's S3 filesystem for the configured endpoint (settings ``s3_endpoint_url``, ``s3_region``)."""
    from gpu_core.settings import get_settings

    s = get_settings()
    return _s3(s.s3_endpoint_url, s.s3_region)


@dataclass(frozen=True)
class FileStat:
    st_size: int
    st_mtime: float


class LakePath:
    """A path on an object store (``s3://bucket/key``) with the :class:`pathlib.Path` subset the lake code
    uses; picklable (Dask tasks carry it to the workers with its filesystem)."""

    __slots__ = ("fs", "path", "scheme")

    def __init__(self, path: str, fs: pafs.FileSystem | None = None, scheme: str = "s3"):
        self.path = path.strip("/")
        self.fs = fs if fs is not None else s3_filesystem()
        self.scheme = scheme

    def __reduce__(self):
        return (LakePath, (self.path, self.fs, self.scheme))

    # -- pure path -----------------------------------------------------------------------------
    def __truediv__(self, other: str) -> LakePath:
        return LakePath(posixpath.join(self.path, str(other)), self.fs, self.scheme)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.path}"

    def __repr__(self) -> str:
        return f"LakePath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LakePath) and (self.scheme, self.path) == (other.scheme, other.path)

    def __hash__(self) -> int:
        return hash((self.scheme, self.path))

    def __lt__(self, other: LakePath) -> bool:
        return self.path < other.path

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def stem(self) -> str:
        return posixpath.splitext(self.name)[0]

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1]

    @property
    def parent(self) -> LakePath:
        return LakePath(posixpath.dirname(self.path), self.fs, self.scheme)

    @property
    def bucket(self) -> str:
        return self.path.split("/", 1)[0]

    @property
    def key(self) -> str:
        """The object key (or key prefix) within the bucket."""
        return self.path.split("/", 1)[1] if "/" in self.path else ""

    def relative_to(self, other: LakePath) -> str:
        return posixpath.relpath(self.path, other.path)

    def with_suffix(self, suffix: str) -> LakePath:
        return LakePath(posixpath.splitext(self.path)[0] + suffix, self.fs, self.scheme)

    # -- the store -----------------------------------------------------------------------------
    def _info(self) -> pafs.FileInfo:
        return self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        return self._info().type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self._info().type == pafs.FileType.Directory

    def is_file(self) -> bool:
        return self._info().type == pafs.FileType.File

    def stat(self) -> FileStat:
        info = self._info()
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(str(self))
        return FileStat(info.size or 0, info.mtime.timestamp() if info.mtime else 0.0)

    def _children(self, recursive: bool) -> list[pafs.FileInfo]:
        return self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True, recursive=recursive))

    def iterdir(self) -> Iterator[LakePath]:
        for info in self._children(False):
            yield LakePath(info.path, self.fs, self.scheme)

    def glob(self, pattern: str) -> Iterator[LakePath]:
        """Direct children whose name matches ``pattern`` (``rglob``: at any depth)."""
        for info in self._children(False):
            if fnmatch.fnmatchcase(info.base_name, pattern):
                yield LakePath(info.path, self.fs, self.scheme)

    def rglob(self, pattern: str) -> Iterator[LakePath]:
        for info in self._children(True):
            if fnmatch.fnmatchcase(info.base_name, pattern):
                yield LakePath(info.path, self.fs, self.scheme)

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        if not exist_ok and self.exists():
            raise FileExistsError(str(self))
        self.fs.create_dir(self.path, recursive=True)

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def write_bytes(self, data: bytes) -> int:
        with self.fs.open_output_stream(self.path) as f:
            f.write(data)
        return len(data)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.delete_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rename(self, target: LakePath) -> LakePath:
        """Move a file, or every object under a folder (one by one: object stores have no rename)."""
        info = self._info()
        if info.type == pafs.FileType.File:
            self.fs.move(self.path, target.path)
            return target
        for child in self._children(True):
            if child.type == pafs.FileType.File:
                self.fs.move(child.path, posixpath.join(target.path, posixpath.relpath(child.path, self.path)))
        self.fs.delete_dir(self.path)
        return target

    def expire_after(self, days: int, rule_id: str) -> dict:
        """A bucket lifecycle rule: objects under this prefix expire ``days`` after they were written
        (the store deletes them itself; Glacier-style cold storage). Other rules of the bucket are kept.
        Returns the rule. Needs boto3 (the S3 API's bucket configuration, which pyarrow does not speak)."""
        client = s3_client()
        rule = {"ID": rule_id, "Filter": {"Prefix": self.key.rstrip("/") + "/"}, "Status": "Enabled",
                "Expiration": {"Days": int(days)}}
        try:
            rules = client.get_bucket_lifecycle_configuration(Bucket=self.bucket).get("Rules", [])
        except client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchLifecycleConfiguration":
                raise
            rules = []
        rules = [r for r in rules if r.get("ID") != rule_id] + [rule]
        client.put_bucket_lifecycle_configuration(Bucket=self.bucket, LifecycleConfiguration={"Rules": rules})
        return rule


def s3_client():
    """A boto3 S3 client for the configured endpoint (bucket configuration: lifecycle rules)."""
    import boto3

    from gpu_core.settings import get_settings

    s = get_settings()
    return boto3.client("s3", endpoint_url=s.s3_endpoint_url, region_name=s.s3_region)


AnyPath = Path | LakePath


def lake_path(value: str | os.PathLike | LakePath) -> AnyPath:
    """A local :class:`~pathlib.Path` or, for an ``s3://`` URL, a :class:`LakePath` on the object store."""
    if isinstance(value, LakePath | Path):
        return value
    text = os.fspath(value)
    if text.startswith("s3://"):
        return LakePath(text[len("s3://"):])
    if "://" in text:
        raise ValueError(f"unsupported lake URL {text!r} (a local path or s3://bucket/prefix)")
    return Path(text)


def filesystem(path: AnyPath | str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path on it) of a lake path: every read and write of the lake goes through it."""
    p = lake_path(path)
    if isinstance(p, LakePath):
        return p.fs, p.path
    return _LOCAL, os.path.abspath(p)


_LOCAL = pafs.LocalFileSystem()


def read_parquet(path: AnyPath | Sequence[AnyPath], columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A Parquet file, a folder of them, or a list of files (all on one filesystem) as one frame."""
    if isinstance(path, list | tuple):
        if not path:
            raise ValueError("read_parquet: no files")
        fs = filesystem(path[0])[0]
        where: Any = [filesystem(p)[1] for p in path]
    else:
        fs, where = filesystem(path)
    return pd.read_parquet(where, columns=list(columns) if columns is not None else None, filesystem=fs)


def write_parquet(df: pd.DataFrame, path: AnyPath) -> None:
    fs, where = filesystem(path)
    df.to_parquet(where, index=False, filesystem=fs)


def read_schema(path: AnyPath) -> pa.Schema:
    fs, where = filesystem(path)
    return pq.read_schema(where, filesystem=fs)


def read_metadata(path: AnyPath) -> pq.FileMetaData:
    fs, where = filesystem(path)
    return pq.read_metadata(where, filesystem=fs)


def remove_tree(path: AnyPath) -> None:
    """Delete a folder and everything under it (no error if absent)."""
    fs, where = filesystem(path)
    try:
        fs.delete_dir(where)
    except FileNotFoundError:
        pass
    except OSError:
        if isinstance(lake_path(path), Path):
            shutil.rmtree(where, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# Folders published to object storage (index versions) and fetched back to local disk for the readers
# that need local files (faiss, the keyword index)
@contextlib.contextmanager
def publish_dir(target: AnyPath, last: Sequence[str] = ()) -> Iterator[Path]:
    """Yield a local folder to fill; on success it becomes ``target``. Locally: :func:`atomic_dir` (one
    rename). On object storage: one PUT per file, the names in ``last`` (a manifest) after all others; each
    PUT is atomic but the folder is not, so ``target`` must be a fresh prefix (a version) that readers find
    only through a pointer written after this returns (a ``CURRENT`` object, a Redis key)."""
    target = lake_path(target)
    if isinstance(target, Path):
        with atomic_dir(target) as tmp:
            yield tmp
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="jaikod-publish-") as tmp:
        yield Path(tmp)
        upload_dir(Path(tmp), target, last=last)


def upload_dir(src: Path, target: LakePath, last: Sequence[str] = ()) -> int:
    """Upload every file under the local folder ``src`` to the prefix ``target`` (the relative names in
    ``last`` after all others); returns the number of files."""
    files = sorted((p for p in Path(src).rglob("*") if p.is_file()),
                   key=lambda p: (p.relative_to(src).as_posix() in last, p.relative_to(src).as_posix()))
    for p in files:
        pafs.copy_files(str(p), posixpath.join(target.path, p.relative_to(src).as_posix()),
                        source_filesystem=_LOCAL, destination_filesystem=target.fs)
    return len(files)


def fetch_dir(src: AnyPath, cache: Path) -> Path:
    """A local copy of the folder ``src``: ``src`` itself when it is local; on object storage a download
    into ``cache`` (into a hidden temporary sibling, renamed into place when complete), reused when a
    complete copy is already there (another process may have fetched it first). Raises OSError
    (FileNotFoundError when ``src`` holds nothing) when the store cannot be read."""
    src = lake_path(src)
    if isinstance(src, Path):
        return src
    cache = Path(cache)
    if cache.is_dir():
        return cache
    if not any(info.type == pafs.FileType.File for info in src._children(True)):
        raise FileNotFoundError(f"{src}: nothing to fetch")
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.parent / f".{cache.name}.fetch-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()  # copy_files creates the sub-folders it lists, not the destination itself
        pafs.copy_files(src.path, str(tmp), source_filesystem=src.fs, destination_filesystem=_LOCAL)
        os.rename(tmp, cache)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if cache.is_dir():  # another process renamed its complete copy first
            return cache
        raise
    return cache
