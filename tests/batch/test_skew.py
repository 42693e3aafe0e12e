"""Training/serving skew: the offline feature vector of a holdout impression (``training_set``) equals
the vector the online service assembles for the same user, product and time, from the Redis snapshot
materialised for that day plus the real-time state built by replaying the events before ``t``.

The online side is the service's own code: the pipeline's user stage (snapshot pointer, user daily
row, user real-time state, context), ``HydrationStage`` (product mirror + one MGET of real-time state)
and the keyword index's ``text_match``; then ``assemble_matrix``.
"""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pandas as pd
import pytest

from batch.dataset import training_set
from batch.etl import build_dims, etl_as_of, ts_ms
from batch.lake import read_events
from batch.materialize import run_materialize
from gpu_core.device import backend
from gpu_core.feature_store import OnlineStore
from gpu_core.settings import get_settings
from kernels.features import MODEL_FEATURES

online = pytest.importorskip("online.pipeline")
from online.candidates import CandidateBatch, RequestContext  # noqa: E402
from online.state import ServiceState  # noqa: E402

EVENT_COLS = ["event_id", "event_type", "ts", "user_id", "product_id", "query"]


def test_offline_vector_equals_online_vector(tiny_world, jaikod_env, redis_client):
    lake = tiny_world.lake
    holdout = etl_as_of(lake)
    # the snapshot the service would serve on the holdout day, into this test's own Redis db and home
    summary = run_materialize(lake, as_of=holdout - dt.timedelta(days=1), client=redis_client)
    assert summary.day == holdout

    ds = training_set(lake, [holdout])
    rows = ds.rows.reset_index(drop=True)
    # requests of a two-hour slice in the middle of the day (every request with a query included)
    lo = pd.Timestamp(holdout, tz="UTC") + pd.Timedelta(hours=11)
    hi = lo + pd.Timedelta(hours=2)
    in_slice = (rows["ts_ms"] >= lo.value // 10**6) & (rows["ts_ms"] < hi.value // 10**6)
    requests = rows.loc[in_slice, "request_id"].unique()
    assert len(requests) >= 10
    assert (rows.loc[in_slice, "query"].fillna("") != "").any()

    products, _ = build_dims(lake, holdout)
    category = dict(zip(products["product_id"].to_numpy(), products["category"].to_numpy(), strict=True))
    ev = read_events(lake, [holdout - dt.timedelta(days=1), holdout], EVENT_COLS)
    ev["ts_ms"] = ts_ms(ev["ts"])
    ev = ev[(ev["ts_ms"] >= lo.value // 10**6 - 2 * 3600_000) & (ev["ts_ms"] < hi.value // 10**6)]
    ev = ev.sort_values("ts_ms", kind="stable", ignore_index=True)

    settings = get_settings()
    state = ServiceState(settings, backend(), registry=None, redis_client=redis_client)
    state.startup()
    assert state.mirror is not None and state.mirror.version == summary.version
    pipeline = online.RankingPipeline(state)
    store = OnlineStore(redis_client)

    applied = 0
    compared = 0
    order = rows.loc[rows["request_id"].isin(requests)].groupby("request_id", sort=False)["ts_ms"].min()
    for request_id, t in order.sort_values(kind="stable").items():
        # the stream processor has applied every event before t, none at/after t
        todo = ev.iloc[applied:]
        todo = todo[todo["ts_ms"] < t]
        pipe = redis_client.pipeline(transaction=False)
        for e in todo.itertuples():
            store.apply_event(e.event_id, e.event_type, int(e.ts_ms), int(e.user_id), int(e.product_id),
                              int(category.get(int(e.product_id), -1)), e.query or "", pipe=pipe)
        pipe.execute()
        applied += len(todo)

        sel = np.flatnonzero((rows["request_id"] == request_id).to_numpy())
        r0 = rows.iloc[sel[0]]
        assert (rows["ts_ms"].to_numpy()[sel] == t).all()
        ctx = RequestContext(request_id=str(request_id), kind="search" if r0["query"] else "feed",
                             user_id=int(r0["user_id"]), lat=None, lon=None, device_type=int(r0["device_type"]),
                             limit=len(sel), query=r0["query"] or "", now_ms=int(t),
                             deadline_s=time.perf_counter() + 60)
        pipeline.run(ctx, None, start="user", stop="user")
        pids = rows["product_id"].to_numpy(np.int64)[sel]
        idx = state.mirror.index_of(pids)
        assert (idx >= 0).all()
        xp = state.be.xp
        batch = CandidateBatch.of(xp, idx, np.zeros(len(sel), np.int8))
        batch = pipeline.run(ctx, batch, start="hydration", stop="hydration")
        assert batch.cols is not None, ctx.fallbacks  # hydration adds text_match for a search
        X_online = np.asarray(pipeline.stage("scoring").matrix(ctx, batch, xp))
        X_offline = ds.X[sel]
        for j, name in enumerate(MODEL_FEATURES):
            np.testing.assert_allclose(X_online[:, j], X_offline[:, j], rtol=1e-5, atol=1e-5,
                                       err_msg=f"feature {name}, request {request_id} at {t}")
        compared += len(sel)
    assert compared >= 50
    # the slice exercised non-trivial real-time and daily values
    sl = ds.X[in_slice.to_numpy()]
    for name in ("views_last_hour", "ctr_last_hour", "category_affinity", "user_item_similarity",
                 "log_popularity", "session_clicks_last_5m"):
        assert np.ptp(sl[:, MODEL_FEATURES.index(name)]) > 0, name
