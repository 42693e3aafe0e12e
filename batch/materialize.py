"""Materialisation: the serving day's features into Redis as a versioned snapshot with an atomic
switch, the retrieval indexes (faiss + BM25) as versioned artifacts, and the "popular in region" and
"Trending Globally" lists.

Order matters for readers: indexes are written first (folder per version), then the Redis snapshot
is written in full and the one pointer key flips to it; the index ``CURRENT`` file flips last-but-one.
Readers that follow the pointer never see a mix of versions.

The artifacts folder may be on object storage (``JAIKOD_ARTIFACTS=s3://bucket/artifacts``): a version's
folder is built locally and published with one PUT per file, its manifest (the checksums) last
(:func:`gpu_core.lake.publish_dir`), before the Redis pointer and ``CURRENT`` name it; services download it
(:func:`gpu_core.lake.fetch_dir`) and check it against the manifest before loading.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import redis

from batch.dataset import daily_views
from batch.etl import etl_as_of, features_dir
from engines.embeddings import TitleSpace
from engines.index import MANIFEST, build_vector_index, write_manifest
from engines.search.index import SearchIndex
from engines.search.opensearch import build_index, index_name, prune_indexes
from gpu_core.feature_store import VERSIONS, OnlineStore, OverrideKeys, SellerRecord
from gpu_core.feature_store import write_sellers as write_seller_records
from gpu_core.geo import N_REGIONS
from gpu_core.lake import publish_dir, remove_tree
from gpu_core.redis_client import connect
from gpu_core.schema import CONTEXT_DAILY, PRODUCT_DAILY, USER_DAILY
from gpu_core.settings import get_settings

POPULAR_PER_REGION = 500  # at least; a region's list is as long as the retrieval pool (popular_per_region)
TRENDING_SIZE = 200


@dataclass
class MaterializeSummary:
    version: str
    day: dt.date
    users: int
    products: int
    index_dir: Path
    seconds: float

    def as_rows(self) -> dict:
        return {"version": self.version, "serving day": str(self.day), "users": self.users,
                "products": self.products, "index": str(self.index_dir), "seconds": round(self.seconds, 2)}


def index_root() -> Path:
    """Index versions and ``CURRENT``: a local folder or a prefix on object storage (settings ``artifacts``)."""
    return get_settings().index_store


def current_index_dir() -> Path | None:
    cur = index_root() / "CURRENT"
    if not cur.exists():
        return None
    return index_root() / cur.read_text().strip()


def popular_per_region(settings) -> int:
    """How long each region's popular list is: the retrieval pool (``n_candidates`` x
    ``retrieval_pool_factor``), so that a user without a vector (cold start) is still scored over up to
    ``n_candidates`` listings once the distance filter has cut the list (a 500-long list capped them at 500)."""
    return max(POPULAR_PER_REGION, int(round(settings.n_candidates * settings.retrieval_pool_factor)))


def popular_lists(popularity: np.ndarray, region: np.ndarray, eligible: np.ndarray, ids: np.ndarray,
                  per_region: int = POPULAR_PER_REGION):
    order = np.lexsort((ids, -popularity))  # most popular first, ties by id
    order = order[eligible[order]]
    by_region = {r: ids[order[region[order] == r]][:per_region] for r in range(N_REGIONS)}
    return by_region, ids[order][:TRENDING_SIZE]


def run_materialize(lake: Path, as_of: dt.date | None = None, client: redis.Redis | None = None,
                    version: str | None = None) -> MaterializeSummary:
    t0 = time.perf_counter()
    settings = get_settings()
    as_of = as_of or etl_as_of(lake)
    day = as_of + dt.timedelta(days=1)
    views = daily_views(lake, day)
    version = version or f"{day.isoformat()}-{uuid.uuid4().hex[:8]}"
    extra = views.product_extra
    eligible = extra["in_stock"].to_numpy(bool) & ~extra["seller_banned"].to_numpy(bool)
    # 1. indexes (folder per version), only listings that can be served
    root = index_root()
    with publish_dir(root / version, last=(MANIFEST,)) as tmp:
        ids = views.product_ids[eligible]
        latlong = views.product["latlong"][eligible]
        build_vector_index(ids, views.product["embedding_vector"][eligible], settings, version=version,
                           attrs={"category": views.product["category"][eligible],
                                  "seller": views.product_seller[eligible],
                                  "lat": latlong[:, 0], "lon": latlong[:, 1]}).save(tmp)
        # the whole catalogue's statistics (as the ETL's features see them), eligible listings retrievable
        SearchIndex.build(views.product_ids, extra["title"].to_numpy(), extra["category"].to_numpy(),
                          eligible=eligible).save(tmp)
        space = TitleSpace.load(features_dir(lake) / "embeddings")  # cold-start vectors of intake listings
        if space is not None:
            space.save(tmp)
        write_manifest(tmp, version=version, day=day, products=int(eligible.sum()))
    if settings.keyword_backend == "opensearch":  # the same catalogue into the node (retrieval there)
        build_index(settings.opensearch_url, index_name(version), views.product_ids, extra["title"].to_numpy(),
                    extra["category"].to_numpy(), eligible=eligible)
    # 2. the Redis snapshot, then the pointer
    store = OnlineStore(client or connect(settings.redis_url))
    by_region, trending = popular_lists(views.product["popularity"], views.product_region, eligible,
                                        views.product_ids, per_region=popular_per_region(settings))
    store.write_snapshot(
        version,
        user_ids=views.user_ids,
        user_rows=USER_DAILY.pack(views.user, len(views.user_ids)),
        product_ids=views.product_ids,
        product_rows=PRODUCT_DAILY.pack(views.product, len(views.product_ids)),
        product_seller=views.product_seller,
        product_region=views.product_region,
        context_row=CONTEXT_DAILY.pack(views.context, 1)[0],
        popular_by_region=by_region,
        trending=trending,
        meta={"as_of": as_of.isoformat(), "day": day.isoformat()},
    )
    write_sellers(store.r, lake)
    write_sponsored(store.r, views.product_ids[eligible])
    # stock: sold listings are flagged in the real-time state the filters read
    pipe = store.r.pipeline(transaction=False)
    for pid in views.product_ids[~extra["in_stock"].to_numpy(bool)]:
        store.set_flags(int(pid), sold=True, pipe=pipe)
    pipe.execute()
    (root / "CURRENT").write_text(version)
    keep = {version, *[v.decode() for v in store.r.lrange(VERSIONS, 0, -1)]}
    _prune(root, keep=keep)
    if settings.keyword_backend == "opensearch":
        prune_indexes(settings.opensearch_url, keep)
    if settings.vector_backend == "milvus":  # the collections of pruned versions go with their folders
        from engines.vector_milvus import collection_name, drop_collections

        drop_collections(settings.milvus_uri, {collection_name(v) for v in keep})
    return MaterializeSummary(version, day, len(views.user_ids), len(views.product_ids), root / version,
                              time.perf_counter() - t0)


SPONSORED_SHARE = 0.02


def write_sellers(r: redis.Redis, lake: Path) -> None:
    """Seller trust inputs (for ``GET /v1/sellers/{id}/trust``) and the batch ban list (an override)."""
    from batch.etl import ts_ms
    from batch.lake import read_table

    sellers = read_table(lake, "sellers")
    joined = ts_ms(sellers["joined_at"])
    pipe = r.pipeline(transaction=False)
    write_seller_records(pipe, (SellerRecord(int(sid), bool(ver), int(rep), int(j), bool(ban)) for sid, ver, rep, j, ban in
                         zip(sellers["seller_id"].to_numpy(), sellers["verified_id"].to_numpy(),
                             sellers["reports"].to_numpy(), joined, sellers["banned"].to_numpy(), strict=True)))
    banned = sellers["seller_id"].to_numpy()[sellers["banned"].to_numpy(bool)]
    if len(banned):
        pipe.sadd(OverrideKeys.BANNED_SELLERS, *[int(x) for x in banned])
    pipe.incr(OverrideKeys.VERSION)
    pipe.execute()


def write_sponsored(r: redis.Redis, eligible_ids: np.ndarray) -> None:
    """The demo's sponsored inventory: a deterministic ~2 % of the listings (admin API edits it)."""
    chosen = eligible_ids[(eligible_ids * 2654435761 % 1000) < SPONSORED_SHARE * 1000]
    pipe = r.pipeline(transaction=True)
    pipe.delete(OverrideKeys.SPONSORED)
    if len(chosen):
        pipe.sadd(OverrideKeys.SPONSORED, *[int(x) for x in chosen])
    pipe.incr(OverrideKeys.VERSION)
    pipe.execute()


def _prune(root: Path, keep: set[str]) -> None:
    for d in root.iterdir():
        if d.is_dir() and not d.name.startswith(".") and d.name not in keep:
            remove_tree(d)
