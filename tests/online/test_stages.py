"""Each pipeline stage's contract on hand-built batches (a ServiceState whose mirror is filled by hand).

Filters, hydration and scoring use a real (private) Redis; re-rank and polish are property-tested with
hypothesis over random batches.
"""

from __future__ import annotations

import math
from itertools import groupby

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpu_core.device import backend
from gpu_core.feature_store import OnlineStore, OverrideKeys, rt_product_key
from gpu_core.schema import PRODUCT_DAILY
from gpu_core.settings import get_settings
from kernels.slots import inject_slots
from online.candidates import CandidateBatch, RequestContext, Source, UserState
from online.stages import FilterStage, HydrationStage, PolishStage, RerankStage, StockFilterStage
from online.state import Overrides, ProductMirror, ServiceState

R_KM = 6371.0088


def make_mirror(ids, seller, category=None, latlong=None, fraud=None, popularity=None, version="v-test"):
    be = backend()
    n = len(ids)
    cols = {}
    if category is not None:
        cols["category"] = category
    if latlong is not None:
        cols["latlong"] = np.asarray(latlong, np.float32)
    if fraud is not None:
        cols["fraud_score"] = fraud
    if popularity is not None:
        cols["popularity"] = popularity
    rows = PRODUCT_DAILY.pack(cols, n)
    order = np.argsort(np.asarray(ids), kind="stable")
    rows = rows[order]
    ids = np.asarray(ids, np.int64)[order]
    seller = np.asarray(seller, np.int64)[order]
    dev = {k: be.xp.asarray(np.ascontiguousarray(v)) for k, v in PRODUCT_DAILY.unpack(rows).items()}
    return ProductMirror(version, ids, seller, dev, be.xp.asarray(seller), be.xp.asarray(np.zeros(n, np.int32)),
                         ids[:10], np.array([rt_product_key(i) for i in ids], dtype=object))


def make_state(client, mirror) -> ServiceState:
    state = ServiceState(get_settings(), backend(), None, redis_client=client)
    state.mirror = mirror
    return state


def make_ctx(**kw) -> RequestContext:
    base = dict(request_id="t", kind="feed", user_id=1, lat=None, lon=None, device_type=-1, limit=20, query="",
                now_ms=1_700_000_000_000, deadline_s=math.inf)
    base.update(kw)
    return RequestContext(**base)


def full_batch(state) -> CandidateBatch:
    n = len(state.mirror.ids)
    return CandidateBatch.of(state.be.xp, np.arange(n), np.full(n, Source.VECTOR, np.int8))


def with_user(ctx: RequestContext, geo=None, max_km: float = 500.0) -> RequestContext:
    """A context whose user stage ran: location ``geo`` and max distance ``max_km``."""
    ctx.user = UserState({}, True, geo, max_km, {})
    return ctx


def batch_ids(state, batch, alive_only=True) -> set[int]:
    idx = np.asarray(batch.idx)
    if alive_only:
        idx = idx[np.asarray(batch.alive)]
    return set(state.mirror.ids[idx].tolist())


# ---- filters -----------------------------------------------------------------------------------------
def test_filters_remove_banned_seller_and_category(jaikod_env, redis_client):
    ids = np.arange(100, 112)
    seller = np.array([1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6])
    category = np.array([0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5])
    state = make_state(redis_client, make_mirror(ids, seller, category=category))
    state.overrides.banned_sellers = np.array([2, 5], np.int64)
    state.overrides.banned_categories = np.array([1, 4], np.int32)
    ctx = with_user(make_ctx())
    out = FilterStage().run(ctx, full_batch(state), state)
    kept = batch_ids(state, out)
    expect = {int(i) for i, s, c in zip(ids, seller, category, strict=True) if s not in (2, 5) and c not in (1, 4)}
    assert kept == expect
    assert out.n == len(expect)  # compacted
    assert ctx.removed_by_reason() == {"banned_seller": 4, "banned_category": 4}


def test_filters_distance_exact_at_boundary(jaikod_env, redis_client):
    # items due north of the user: distance = R * dlat (radians), independent of the kernel
    user = (13.0, 100.0)
    dlat = np.array([0.5, 1.0, 2.0, 4.0, 4.5])
    latlong = np.stack([user[0] + dlat, np.full(5, user[1])], axis=1).astype(np.float32)
    exact = R_KM * np.radians(latlong[:, 0].astype(np.float64) - user[0])
    ids = np.arange(5) + 1
    state = make_state(redis_client, make_mirror(ids, ids, latlong=latlong))
    for j in range(5):
        boundary = float(exact[j])
        for limit, kept_j in ((boundary * (1 + 1e-9), True), (boundary * (1 - 1e-6), False)):
            ctx = with_user(make_ctx(lat=user[0], lon=user[1]), user, limit)
            out = FilterStage().run(ctx, full_batch(state), state)
            kept = batch_ids(state, out)
            assert (int(ids[j]) in kept) is kept_j, (j, limit)
            assert kept == {int(i) for i, d in zip(ids, exact, strict=True) if d <= limit}
    # the comparison is inclusive: the kernel's own distance as the limit keeps the item
    from kernels.geo import haversine_km

    ll64 = latlong.astype(np.float64)
    d = haversine_km(user[0], user[1], ll64[:, 0], ll64[:, 1], xp=np)
    ctx = with_user(make_ctx(), user, float(d[2]))
    assert batch_ids(state, FilterStage().run(ctx, full_batch(state), state)) == {1, 2, 3}
    ctx = with_user(make_ctx(), user, float(np.nextafter(d[2], 0)))
    assert batch_ids(state, FilterStage().run(ctx, full_batch(state), state)) == {1, 2}


def test_filters_without_location_keep_everything(jaikod_env, redis_client):
    ids = np.arange(1, 9)
    latlong = np.tile([[60.0, 10.0]], (8, 1))  # far away, but the request has no location
    state = make_state(redis_client, make_mirror(ids, ids, latlong=latlong))
    ctx = with_user(make_ctx())
    assert batch_ids(state, FilterStage().run(ctx, full_batch(state), state)) == set(ids.tolist())


def test_filters_keep_the_first_n_candidates_that_pass_the_hard_rules(jaikod_env, redis_client):
    # retrieval hands the filters a wider pool; the first n_candidates survivors (retrieval order) are kept,
    # force-boosted candidates always
    user = (13.0, 100.0)
    far = np.array([0, 1, 0, 1, 1, 0, 0, 1, 0, 0, 0, 0], bool)  # 1 = 10 degrees north (~1,100 km)
    latlong = np.stack([user[0] + 10.0 * far, np.full(12, user[1])], axis=1).astype(np.float32)
    ids = np.arange(12) + 1
    state = make_state(redis_client, make_mirror(ids, ids, latlong=latlong))
    state.settings = state.settings.model_copy(update={"n_candidates": 3})
    source = np.full(12, Source.VECTOR, np.int8)
    source[11] = Source.BOOSTED
    ctx = with_user(make_ctx(lat=user[0], lon=user[1]), user, 500.0)
    out = FilterStage().run(ctx, CandidateBatch.of(state.be.xp, np.arange(12), source), state)
    assert batch_ids(state, out) == {1, 3, 6, 12}  # the first three near ones, and the boosted one
    assert ctx.removed_by_reason() == {"too_far": 4, "beyond_n_candidates": 4}


# ---- hydration -----------------------------------------------------------------------------------------
def test_hydration_reads_realtime_in_one_mget_and_the_stock_filter_drops_sold(jaikod_env, redis_client):
    ids = np.arange(500, 540)
    rng = np.random.default_rng(0)
    pop = rng.random(40).astype(np.float32)
    state = make_state(redis_client, make_mirror(ids, ids % 7, popularity=pop))
    store = OnlineStore(redis_client)
    sold = [503, 517, 539]
    for pid in sold:
        store.set_flags(pid, sold=True)
    store.set_flags(510, boosted=True)
    state.overrides.boost = np.array([520], np.int64)
    ctx = with_user(make_ctx())
    before = redis_client.info("commandstats").get("cmdstat_mget", {}).get("calls", 0)
    out = HydrationStage().run(ctx, full_batch(state), state)
    after = redis_client.info("commandstats").get("cmdstat_mget", {}).get("calls", 0)
    assert after - before == 1  # all candidates' real-time features in one round trip
    assert batch_ids(state, out) == set(ids.tolist())  # hydration fills columns; it drops nothing
    assert np.asarray(out.cols["stock_status"]).sum() == len(ids) - len(sold)
    ctx.stage = "stock"
    out = StockFilterStage().run(ctx, out, state)
    assert batch_ids(state, out) == set(ids.tolist()) - set(sold)
    assert out.n == len(ids) - len(sold)  # compacted, columns with it
    assert all(len(v) == out.n for v in out.cols.values())
    assert ctx.removed == {"stock": {"sold": 3}}
    idx = np.asarray(out.idx)
    got_ids = state.mirror.ids[idx]
    np.testing.assert_array_equal(np.asarray(out.cols["popularity"]), state.mirror.cols["popularity"][idx])
    boosted = dict(zip(got_ids.tolist(), np.asarray(out.cols["is_boosted_now"]).tolist(), strict=True))
    assert boosted[510] == 1.0 and boosted[520] == 1.0
    assert sum(boosted.values()) == 2.0


def test_hydration_redis_failure_is_feature_store_slow(jaikod_env, redis_client):
    import redis

    ids = np.arange(1, 6)
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.05)
    state = make_state(dead, make_mirror(ids, ids))
    ctx = with_user(make_ctx())
    out = HydrationStage().run(ctx, full_batch(state), state)
    assert "feature_store_slow" in ctx.fallbacks and not ctx.feature_store_ok
    assert out.X is None and out.cols is None


# ---- re-rank + polish, property-tested ---------------------------------------------------------------
def feasible(sellers: list[int], m: int) -> bool:
    """A sequence with these seller counts can be arranged with no run longer than m."""
    if not sellers:
        return True
    counts = np.bincount(np.asarray(sellers) - min(sellers))
    c = int(counts.max())
    return c <= m * (len(sellers) - c + 1)


def max_run(sellers) -> int:
    return max((len(list(g)) for _, g in groupby(sellers)), default=0)


@st.composite
def random_batch(draw):
    n = draw(st.integers(1, 120))
    n_sellers = draw(st.integers(1, 8))
    seller = draw(st.lists(st.integers(0, n_sellers - 1), min_size=n, max_size=n))
    score = draw(st.lists(st.floats(0, 1, width=32), min_size=n, max_size=n))
    alive = draw(st.lists(st.booleans(), min_size=n, max_size=n).filter(lambda a: any(a)))
    fraud = draw(st.lists(st.sampled_from([0.0, 0.1, 0.95]), min_size=n, max_size=n))
    sponsored = draw(st.lists(st.integers(0, n - 1), max_size=5))
    limit = draw(st.integers(1, 50))
    return np.array(seller), np.array(score, np.float32), np.array(alive), np.array(fraud, np.float32), \
        sorted(set(sponsored)), limit


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=random_batch())
def test_rerank_and_polish_properties(jaikod_env, redis_client, data):
    seller, score, alive, fraud, sponsored_pos, limit = data
    n = len(seller)
    ids = np.arange(1000, 1000 + n, dtype=np.int64)
    state = make_state(redis_client, make_mirror(ids, seller, fraud=fraud))
    s = state.settings
    xp = state.be.xp
    batch = full_batch(state)
    batch.alive = xp.asarray(alive)
    batch.score = xp.where(batch.alive, xp.asarray(score), -xp.inf)
    inv = ids[sponsored_pos]
    state.overrides.sponsored = np.sort(inv)
    ctx = make_ctx(limit=limit)

    out = RerankStage().run(ctx, batch, state)
    order = np.asarray(out.order)
    # re-rank: a permutation of the best alive candidates, never a dead one
    assert len(set(order.tolist())) == len(order)
    assert alive[order].all()
    k = min(n, max(4 * (limit + len(s.sponsored_slots)), 100))
    assert len(order) == min(k, int(alive.sum()))
    ranked_sellers = seller[order].tolist()
    if feasible(ranked_sellers, s.max_per_seller_run):
        assert max_run(ranked_sellers) <= s.max_per_seller_run
    # without risky items or long runs, the order is the plain score order
    from kernels.scoring import top_k_indices

    plain = np.asarray(top_k_indices(score, k, mask=alive, xp=np))
    if not (fraud[plain] >= s.fraud_threshold).any() and max_run(seller[plain].tolist()) <= s.max_per_seller_run:
        assert order.tolist() == plain.tolist()

    out = PolishStage().run(ctx, out, state)
    final, flags = out.final_ids, out.sponsored
    assert len(final) <= limit
    assert len(set(final.tolist())) == len(final)  # sponsored never duplicated in the organic list
    eligible_sp = [int(i) for i in inv if alive[i - 1000]]
    slots = [p for p in s.sponsored_slots if p <= limit]
    sp_positions = [i + 1 for i, f in enumerate(flags) if f]
    # sponsored exactly at the slots (4 and 12), as many as there are sponsored candidates and room
    assert sp_positions == slots[: len(sp_positions)]
    assert len(sp_positions) <= min(len(eligible_sp), len(slots))
    if len(order) >= limit + len(slots):
        assert len(sp_positions) == min(len(eligible_sp), len(slots))
    assert set(final[flags].tolist()) <= set(inv.tolist())
    assert not set(final[flags].tolist()) & set(final[~flags].tolist())
    # organic items keep the re-ranked order, unless a slot broke the seller-run rule
    organic = [int(i) for i in final[~flags]]
    reranked = [int(i) for i in ids[order] if int(i) not in set(final[flags].tolist())]
    injected, _ = inject_slots(ids[order], final[flags], slots=slots, n=limit, xp=np)
    if max_run([int(seller[i - 1000]) for i in injected]) <= s.max_per_seller_run:
        assert organic == reranked[: len(organic)]
    else:
        assert set(organic) <= set(reranked)
    # the served list, sponsored slots included, keeps the seller-run rule whenever the pool has room:
    # at least `limit` candidates of other sellers than any one seller
    final_sellers = [int(seller[i - 1000]) for i in final]
    counts = np.bincount(seller[order], minlength=seller.max() + 1)
    if all(len(order) - c >= limit for c in counts):
        assert max_run(final_sellers) <= s.max_per_seller_run, (final_sellers, flags.astype(int).tolist())
    # positions map back into the batch
    pos = out.final_pos
    assert (ids[pos] == final).all()


@pytest.mark.parametrize("limit", [4, 12, 20])
def test_polish_sponsored_slots_on_fixed_batch(jaikod_env, redis_client, limit):
    n = 60
    ids = np.arange(1, n + 1, dtype=np.int64)
    seller = np.arange(n) % 10
    state = make_state(redis_client, make_mirror(ids, seller))
    xp = state.be.xp
    batch = full_batch(state)
    batch.score = xp.asarray(np.linspace(1, 0, n, dtype=np.float32))  # item 1 is best
    state.overrides.sponsored = np.array([2, 30, 45], np.int64)
    ctx = make_ctx(limit=limit)
    out = PolishStage().run(ctx, RerankStage().run(ctx, batch, state), state)
    final, flags = out.final_ids.tolist(), out.sponsored.tolist()
    assert len(final) == limit
    expect_sp = {4: [2], 12: [2, 30], 20: [2, 30]}[limit]  # best-scored sponsored candidates first
    assert [final[p - 1] for p in (4, 12) if p <= limit] == expect_sp
    assert [i + 1 for i, f in enumerate(flags) if f] == [p for p in (4, 12) if p <= limit]
    assert final.count(2) == 1


def test_overrides_sync_reads_sets_when_version_moves(jaikod_env, redis_client):
    ov = Overrides()
    Overrides.change(redis_client, "sadd", OverrideKeys.BANNED_CATEGORIES, 3)
    Overrides.change(redis_client, "sadd", OverrideKeys.BOOST, 42, 7)
    ov.sync(redis_client, int(redis_client.get(OverrideKeys.VERSION)))
    assert ov.banned_categories.tolist() == [3] and ov.boost.tolist() == [7, 42]
    redis_client.sadd(OverrideKeys.BOOST, 99)  # without a version bump: not re-read
    ov.sync(redis_client, int(redis_client.get(OverrideKeys.VERSION)))
    assert ov.boost.tolist() == [7, 42]
    Overrides.change(redis_client, "srem", OverrideKeys.BOOST, 7)
    ov.sync(redis_client, int(redis_client.get(OverrideKeys.VERSION)))
    assert ov.boost.tolist() == [42, 99]
