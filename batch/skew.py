"""Training/serving skew check on real traffic: the features the service *served* (the replay log)
against the features the batch side computes for the same user, listing and time.

For every sampled request in the replay log (``jk:replay:*``, :mod:`gpu_core.replay_log`), the
candidates the service scored are rebuilt offline — daily features of the request's day from the
ETL tables, real-time features from the lake's events strictly before the request time with the
stream processor's windows (:func:`batch.etl.point_in_time_features`) — and assembled with the same
:func:`kernels.features.assemble_matrix`. The report counts, per model feature, the rows whose served
value differs. ``distance_km`` is skipped for requests that sent their own lat/lon (the offline side
only knows the user's home).

    jaikod batch skew --lake var/lake --limit 200
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import redis

from batch.dataset import daily_views, read_dims, row_columns
from batch.embeddings import read_product_vectors
from batch.etl import point_in_time_features, search_index
from batch.lake import read_events
from gpu_core.errors import LakeError
from gpu_core.redis_client import connect
from gpu_core.replay_log import scan
from gpu_core.schema import DEVICE_TYPES
from gpu_core.settings import get_settings
from kernels.features import MODEL_FEATURES, assemble_matrix


@dataclass
class SkewReport:
    requests: int = 0
    rows: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    mismatched_rows: dict[str, int] = field(default_factory=lambda: {f: 0 for f in MODEL_FEATURES})
    max_abs_diff: dict[str, float] = field(default_factory=lambda: {f: 0.0 for f in MODEL_FEATURES})

    @property
    def skewed(self) -> dict[str, float]:
        """Share of compared rows that differ, for the features that ever differ."""
        return {f: n / max(self.rows, 1) for f, n in self.mismatched_rows.items() if n}

    def as_rows(self) -> list[dict]:
        return [{"feature": f, "rows differing": n, "share": round(n / max(self.rows, 1), 4),
                 "max |diff|": round(self.max_abs_diff[f], 6)} for f, n in self.mismatched_rows.items()]


def skew_report(lake: Path, client: redis.Redis | None = None, limit: int = 200, rtol: float = 1e-5,
                atol: float = 1e-5) -> SkewReport:
    """``client``: the replay log's Redis (default: ``settings.redis_url``)."""
    client = client if client is not None else connect(get_settings().redis_url)
    dims = read_dims(lake)
    vectors = read_product_vectors(lake)
    products = dims[0]
    search = search_index(products)  # the catalogue's index, as the materialiser built the served one
    report = SkewReport()
    views_by_day: dict[dt.date, object] = {}
    for _request_id, rec in scan(client):
        if report.requests >= limit:
            break
        if not len(rec.X):
            continue
        t_ms = rec.now_ms
        day = dt.datetime.fromtimestamp(t_ms / 1000, tz=dt.UTC).date()
        if day not in views_by_day:
            try:
                views_by_day[day] = daily_views(lake, day, dims, vectors)
            except LakeError:
                views_by_day[day] = None
        views = views_by_day[day]
        if views is None:
            report.skipped["no offline features for the day"] = report.skipped.get(
                "no offline features for the day", 0) + 1
            continue
        alive = rec.alive
        ids = rec.candidate_ids[alive]
        device = DEVICE_TYPES[rec.device_type] if 0 <= rec.device_type < len(DEVICE_TYPES) else ""
        rows = pd.DataFrame({"user_id": np.full(len(ids), rec.user_id, np.int64), "product_id": ids,
                             "ts_ms": np.full(len(ids), t_ms, np.int64), "query": rec.query,
                             "device_type": device})
        ev = read_events(lake, [day - dt.timedelta(days=1), day], ["event_type", "ts", "user_id", "product_id"])
        ev = ev.assign(ts_ms=_ms(ev["ts"])) if len(ev) else ev.assign(ts_ms=np.zeros(0, np.int64))
        rows = point_in_time_features(rows, ev, products, search)
        X_off = assemble_matrix(row_columns(rows, views), xp=np)
        X_srv = rec.X[alive]
        report.requests += 1
        report.rows += len(ids)
        for j, f in enumerate(MODEL_FEATURES):
            if f == "distance_km" and rec.geo_from_request:
                continue
            diff = np.abs(X_off[:, j] - X_srv[:, j])
            bad = diff > atol + rtol * np.abs(X_srv[:, j])
            report.mismatched_rows[f] += int(bad.sum())
            report.max_abs_diff[f] = max(report.max_abs_diff[f], float(diff.max(initial=0.0)))
    return report


def _ms(ts: pd.Series) -> np.ndarray:
    from batch.etl import ts_ms

    return ts_ms(ts)
