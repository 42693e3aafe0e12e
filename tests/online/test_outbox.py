"""The Flink job's lake archive (the outbox in Redis, drained by one archiver): every event once in the lake,
whether a replay appended it twice or the archiver died before or after its renames."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from gpu_core.streams import OUTBOX, OUTBOX_MANIFEST, STREAM_STATS, encode_event
from online.bus import BusEntry
from online.outbox import OutboxArchiver, to_outbox


def _entries(n: int, start: int = 0) -> list[BusEntry]:
    now = int(time.time() * 1000)
    out = []
    for i in range(start, start + n):
        e = {"event_id": f"ob-{i}", "event_type": "click", "ts": now - i * 1000, "user_id": i % 7,
             "product_id": i % 11, "session_id": "s1"}
        out.append(BusEntry(f"b{i}", e, encode_event(e)))
    return out


def _lake(lake: Path) -> pd.DataFrame:
    files = sorted((lake / "events").rglob("stream-*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()


def _push(r, entries: list[BusEntry]) -> None:
    pipe = r.pipeline()
    to_outbox(pipe, entries)
    pipe.execute()


def test_outbox_archives_each_event_once_across_replays_and_crashes(jaikod_env, redis_client, monkeypatch):
    lake = jaikod_env / "lake"
    first = _entries(50)
    _push(redis_client, first + first[:10])  # a worker replayed from a checkpoint appends a batch again
    arch = OutboxArchiver(redis_client, lake)

    def killed(*_a, **_k):
        raise SystemExit("killed after the rename, before the markers")

    monkeypatch.setattr(arch, "_mark", killed)
    with pytest.raises(SystemExit):
        arch.archive()
    assert len(_lake(lake)) == 50 and redis_client.hlen(OUTBOX_MANIFEST) == 1 and redis_client.llen(OUTBOX) == 60

    again = OutboxArchiver(redis_client, lake)
    assert again.recover() == 50  # the renamed file's events are marked archived
    assert again.drain() == 0  # so their outbox entries are skipped and trimmed
    assert redis_client.llen(OUTBOX) == 0 and not redis_client.hlen(OUTBOX_MANIFEST)

    # killed before the rename: the staged file is deleted and its events archived by the next drain
    second = _entries(30, start=50)
    _push(redis_client, second)
    crash = OutboxArchiver(redis_client, lake)
    with monkeypatch.context() as m, pytest.raises(SystemExit):
        m.setattr("online.outbox.commit_file", killed)
        crash.archive()
    staged = list((lake / "events").rglob(".*.tmp"))
    assert staged and len(_lake(lake)) == 50
    last = OutboxArchiver(redis_client, lake)
    assert last.recover() == 0 and not any(p.exists() for p in staged)
    assert last.drain() == 30
    df = _lake(lake)
    assert len(df) == 80 and df["event_id"].nunique() == 80
    assert int(redis_client.hget(STREAM_STATS, "archived")) == 80
