"""What the service holds between requests: the product mirror of the live snapshot, the models,
the retrieval indexes and the admin overrides. Each is swapped atomically (one attribute write of a
new immutable object), so a request in flight keeps the objects it started with — no dropped
requests on a model or snapshot change."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.driver_info import DriverInfo
from redis.retry import Retry

from engines.embeddings import TitleSpace
from engines.index import SideListings, load_vector_index
from engines.ranker import Ranker, ScoreWeights
from engines.search.index import SearchIndex
from gpu_core.device import Backend
from gpu_core.errors import FeatureStoreError, RegistryError, RegistryUnavailable
from gpu_core.feature_store import LiveListingKeys, OnlineStore, OverrideKeys, rt_product_key
from gpu_core.ids import ids_only
from gpu_core.moderation import decode_hash, listing_key
from gpu_core.registry import PRODUCTION, RANKER, STAGING, ModelRef, Registry
from gpu_core.schema import PRODUCT_DAILY
from gpu_core.settings import Settings
from online.catalogue import Catalogue, intake_fields, live_product_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProductMirror:
    """The live snapshot's product table, decoded into columns on the active device."""

    version: str
    ids: np.ndarray  # int64, sorted (host)
    seller: np.ndarray  # int64 (host)
    cols: dict[str, Any]  # PRODUCT_DAILY columns on device
    seller_dev: Any
    region: Any
    trending: np.ndarray  # in-process copy of the most popular ids (Redis down fallback)
    rt_keys: np.ndarray  # the real-time key of each product (object array), built once per snapshot

    @classmethod
    def load(cls, store: OnlineStore, version: str, be: Backend) -> ProductMirror:
        raw = store.load_product_mirror(version)
        order = np.argsort(raw["ids"], kind="stable")
        rows = raw["rows"][order]
        ids, seller, region = raw["ids"][order], raw["seller"][order], raw["region"][order]
        cols = {k: be.xp.asarray(np.ascontiguousarray(v)) for k, v in PRODUCT_DAILY.unpack(rows).items()}
        pop = PRODUCT_DAILY.unpack(rows)["popularity"]
        trending = ids[np.lexsort((ids, -pop))][:200]
        rt_keys = np.array([rt_product_key(i) for i in ids], dtype=object)
        return cls(version, ids, seller, cols, be.xp.asarray(seller), be.xp.asarray(region), trending, rt_keys)

    def with_listings(self, ids: np.ndarray, rows: np.ndarray, seller: np.ndarray, region: np.ndarray,
                      xp: Any) -> ProductMirror:
        """This mirror plus listings appended after its last row (ids above the highest held), so the rows
        of requests in flight stay valid; the version stays the snapshot's."""
        new = PRODUCT_DAILY.unpack(rows)
        cols = {k: xp.concatenate([v, xp.asarray(np.ascontiguousarray(new[k], dtype=np.float32))])
                for k, v in self.cols.items()}
        return ProductMirror(self.version, np.concatenate([self.ids, ids]), np.concatenate([self.seller, seller]),
                             cols, xp.concatenate([self.seller_dev, xp.asarray(seller)]),
                             xp.concatenate([self.region, xp.asarray(region)]), self.trending,
                             np.concatenate([self.rt_keys, np.array([rt_product_key(i) for i in ids], dtype=object)]))

    def index_of(self, product_ids: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.ids, product_ids)
        pos = np.clip(pos, 0, len(self.ids) - 1)
        return np.where(self.ids[pos] == product_ids, pos, -1)


def load_model_dir(model_dir: Path, ref: ModelRef | None, be: Backend) -> Ranker:
    """A registry artifact directory -> the ranker the service scores with (one thread per request)."""
    return Ranker.load(model_dir, ref, device=be.xgb_device, nthread=1)


class ModelHolder:
    """Production (and staging, for the canary) rankers, hot-reloaded when a registry alias moves."""

    def __init__(self, registry: Registry | None, be: Backend):
        self.registry = registry
        self.be = be
        self.models: dict[str, Ranker] = {}
        self.error: str | None = None
        self.unavailable: str | None = None  # the registry could not be reached at the last refresh
        self._lock = threading.Lock()

    def refresh(self) -> bool:
        """Reload any alias whose version changed; True if something changed."""
        if self.registry is None:
            return False
        changed = False
        with self._lock:
            self.unavailable = None
            for alias in (PRODUCTION, STAGING):
                try:
                    ref = self.registry.get(RANKER, alias)
                except RegistryUnavailable as exc:  # keep serving what is loaded; /readyz says why
                    self.error = self.unavailable = exc.message
                    continue
                cur = self.models.get(alias)
                if ref is None:
                    if cur is not None and alias == STAGING:
                        self.models = {k: v for k, v in self.models.items() if k != alias}
                        changed = True
                    continue
                if cur is not None and cur.ref is not None and cur.ref.version == ref.version:
                    continue
                try:
                    model = load_model_dir(self.registry.download(ref), ref, self.be)
                except (RegistryError, OSError) as exc:
                    self.error = f"cannot load {ref.label}: {exc}"
                    log.warning("model load failed: %s", self.error)
                    continue
                self.models = {**self.models, alias: model}  # atomic swap
                self.error = None
                changed = True
        return changed

    def get(self, alias: str = PRODUCTION) -> Ranker | None:
        return self.models.get(alias)


class IndexHolder:
    def __init__(self, root: Path, settings: Settings):
        self.root = root
        self.settings = settings  # vector_backend (faiss | milvus) and its knobs
        self.version: str | None = None
        self.vector: SideListings | None = None
        self.keyword: SearchIndex | None = None
        self.title_space: TitleSpace | None = None  # cold-start vectors of intake listings
        self.error: str | None = None

    def load(self, version: str) -> None:
        folder = self.root / version
        errors = []
        try:
            vector = load_vector_index(folder, self.settings)
        except Exception as exc:
            vector, _ = None, errors.append(f"vector: {exc}")
        try:
            keyword = SearchIndex.load(folder)
            keyword.warm()  # analyzer dictionaries, tries and the fuzzy vocabulary before it serves
        except Exception as exc:
            keyword, _ = None, errors.append(f"keyword: {exc}")
        self.vector, self.keyword, self.version = vector, keyword, version
        self.title_space = TitleSpace.load(folder)
        self.error = "; ".join(errors) or None

    def add_listings(self, ids: np.ndarray, titles: list[str], categories: np.ndarray, vectors: np.ndarray) -> None:
        """Listings taken in since the build join both indexes (new objects, swapped one at a time)."""
        if self.keyword is not None:
            self.keyword = self.keyword.with_listings(ids, titles, categories)
        if self.vector is not None:
            self.vector = self.vector.with_listings(ids, vectors)


class Overrides:
    """Admin global overrides (the :class:`~gpu_core.feature_store.OverrideKeys` sets in Redis), held as
    sorted arrays and re-read when the overrides version moves, so a change applies from the next request."""

    def __init__(self) -> None:
        self.version: int = -1
        self.boost = np.empty(0, np.int64)
        self.banned_categories = np.empty(0, np.int32)
        self.banned_sellers = np.empty(0, np.int64)
        self.sponsored = np.empty(0, np.int64)

    def sync(self, r: redis.Redis, version: int) -> None:
        if version == self.version:
            return
        pipe = r.pipeline(transaction=False)
        for key in OverrideKeys.SETS:
            pipe.smembers(key)
        boost, banned, sellers, sponsored = pipe.execute()

        def arr(members, dtype):
            # a member that is not an id (written around the admin API's checks) is skipped, never served
            ids, bad = ids_only(members)
            if bad:
                log.warning("overrides: %d member(s) that are not int64 ids ignored", bad)
            if dtype is np.int32:
                ids = [i for i in ids if i <= np.iinfo(np.int32).max]
            return np.sort(np.array(ids, dtype=dtype))

        self.boost = arr(boost, np.int64)
        self.banned_categories = arr(banned, np.int32)
        self.banned_sellers = arr(sellers, np.int64)
        self.sponsored = arr(sponsored, np.int64)
        self.version = version

    @staticmethod
    def change(r: redis.Redis, op: str, key: str, *members: int) -> None:
        pipe = r.pipeline(transaction=True)
        getattr(pipe, op)(key, *members)
        pipe.incr(OverrideKeys.VERSION)
        pipe.execute()


def serving_redis(url: str, timeout_s: float) -> redis.Redis:
    """The request path's Redis client: every call bounded by one socket timeout (the feature store's
    budget), no retries, no per-connection ``CLIENT SETINFO`` handshake (two more round trips that would
    each wait a timeout on a fresh connection to a slow server)."""
    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                retry=Retry(NoBackoff(), 0), driver_info=DriverInfo(name=None, lib_version=None))


class RedisHealth:
    """Slow vs down, and a breaker, for the request path (per worker).

    A Redis call that timed out marks Redis *slow*; one refused or reset marks it *down*. For
    ``open_s`` after a failure, requests do not call Redis at all (they are served degraded at once:
    ``feature_store_slow`` or ``redis_down``); then one request probes, and a success closes the breaker.
    So under a slow Redis a request waits at most one timeout, and most wait none. The state changes are
    logged once each, not once per request.
    """

    def __init__(self, open_s: float = 0.25, clock: Any = time.monotonic):
        self.open_s = open_s
        self.clock = clock
        self.kind: str | None = None  # None (healthy) | "slow" | "down"
        self.until = 0.0
        self.failures = 0
        self._lock = threading.Lock()

    def available(self) -> bool:
        """May this request call Redis? (True when healthy, and for the one probe after ``open_s``.)"""
        if self.kind is None:
            return True
        now = self.clock()
        if now < self.until:
            return False
        with self._lock:
            if now < self.until:
                return False
            self.until = now + self.open_s  # the others stay out while this one probes
            return True

    def failed(self, exc: BaseException) -> str:
        kind = "slow" if isinstance(exc, redis.TimeoutError | TimeoutError) else "down"
        with self._lock:
            if kind != self.kind:
                log.warning("redis %s (%s); requests skip it for %.2f s at a time", kind, type(exc).__name__,
                            self.open_s)
            self.kind, self.until = kind, self.clock() + self.open_s
            self.failures += 1
        return kind

    def ok(self) -> None:
        if self.kind is not None:
            with self._lock:
                if self.kind is not None:
                    log.warning("redis answers again (was %s)", self.kind)
                    self.kind = None

    def error(self) -> Exception:
        """The exception a skipped call stands for (the executor maps it to the fallback)."""
        return redis.TimeoutError("redis slow (breaker open)") if self.kind == "slow" else \
            redis.ConnectionError("redis down (breaker open)")


class ServiceState:
    """Everything a request needs, owned by the app."""

    def __init__(self, settings: Settings, be: Backend, registry: Registry | None = None,
                 redis_client: redis.Redis | None = None):
        self.settings = settings
        self.weights = ScoreWeights.from_settings(settings)
        self.be = be
        self.redis = redis_client or serving_redis(settings.redis_url, settings.feature_store_timeout_ms / 1000.0)
        self.redis_health = RedisHealth(settings.redis_breaker_s)
        self.store = OnlineStore(self.redis)
        self.registry = registry
        self.models = ModelHolder(registry, be)
        self.indexes = IndexHolder(settings.artifacts_dir / "index", settings)
        self.overrides = Overrides()
        self.mirror: ProductMirror | None = None
        self.catalogue: Catalogue | None = None  # titles, prices, images (online.catalogue), loaded at start-up
        self.warm = False  # set by RankingPipeline.warm_up: a search and a feed ran through every stage
        self.on_snapshot: Any = None  # called by the refresher after it loaded a new snapshot (warm-up)
        self.context_row: np.ndarray | None = None
        self.live_synced: tuple[int, str] | None = None  # (live-listings version, snapshot) the mirror holds
        self._live_thread: threading.Thread | None = None
        self._sponsored_cache: tuple[tuple[str, int], np.ndarray] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sponsored_mask(self) -> np.ndarray:
        """Mirror-aligned bool mask of the sponsored inventory, rebuilt only when the snapshot or the
        overrides move (an ``isin`` per request cost a third of the polish stage)."""
        mirror, ov = self.mirror, self.overrides
        key = (mirror.version, len(mirror.ids), ov.version)  # intake listings extend a snapshot
        cached = self._sponsored_cache
        if cached is None or cached[0] != key:
            cached = (key, np.isin(mirror.ids, ov.sponsored))
            self._sponsored_cache = cached
        return cached[1]

    # ---- snapshot ---------------------------------------------------------------------------
    def ensure_snapshot(self, version: str | None) -> ProductMirror:
        """Make the mirror (and indexes) follow the snapshot pointer."""
        mirror = self.mirror
        if version is None:
            if mirror is None:
                raise FeatureStoreError("no feature snapshot materialised yet (run `jaikod batch materialize`)")
            return mirror
        if mirror is not None and mirror.version == version:
            return mirror
        with self._lock:
            if self.mirror is not None and self.mirror.version == version:
                return self.mirror
            new = ProductMirror.load(self.store, version, self.be)
            self.context_row = self.store.context_row(version)
            self.indexes.load(version)
            self.mirror = new
            self.live_synced = None  # intake listings are added again over the new snapshot
            log.info("snapshot %s loaded (%d products)", version, len(new.ids))
            return new

    # ---- intake listings accepted since the snapshot ---------------------------------------------
    def sync_live(self, version: int) -> int:
        """Add the ``live`` intake listings (:class:`~gpu_core.feature_store.LiveListingKeys`) that the
        mirror, the indexes and the catalogue do not hold yet; called with the version read in the user
        round trip, so it costs nothing until a listing goes live or a new snapshot is loaded (then all of
        them are added again over it). Returns how many were added."""
        mirror = self.mirror
        if mirror is None or self.live_synced == (version, mirror.version):
            return 0
        with self._lock:
            mirror = self.mirror
            if self.live_synced == (version, mirror.version):
                return 0
            ids = np.array(sorted(int(x) for x in self.redis.smembers(LiveListingKeys.IDS)), np.int64)
            ids = ids[(mirror.index_of(ids) < 0) & (ids > (mirror.ids[-1] if len(mirror.ids) else -1))]
            pipe = self.redis.pipeline(transaction=False)
            for i in ids:
                pipe.hgetall(listing_key(int(i)))
            recs = []
            for i, raw in zip(ids, pipe.execute() if len(ids) else [], strict=True):
                if raw and decode_hash(raw).get("status") == "live":
                    recs.append(intake_fields(raw, int(i)))
            if recs:
                built = live_product_rows(recs, mirror, self.indexes.title_space)
                new_ids = np.array([r["listing_id"] for r in recs], np.int64)
                emb = PRODUCT_DAILY.unpack(built["rows"])
                self.indexes.add_listings(new_ids, [r["title"] or "" for r in recs],
                                          emb["category"].astype(np.int32), emb["embedding_vector"])
                if self.catalogue is not None:
                    self.catalogue = self.catalogue.with_listings(recs, np.asarray(emb["latlong"], np.float64))
                self.mirror = mirror.with_listings(new_ids, built["rows"], built["seller"], built["region"],
                                                   self.be.xp)
                log.info("%d live intake listings added to snapshot %s", len(recs), mirror.version)
            self.live_synced = (version, mirror.version)
            return len(recs)

    def request_live_sync(self, version: int) -> None:
        """:meth:`sync_live` off the request path (one background thread at a time): the request that sees a
        new version is served from what the worker holds, the following ones with the new listings."""
        mirror = self.mirror
        if mirror is None or self.live_synced == (version, mirror.version):
            return
        t = self._live_thread
        if t is not None and t.is_alive():
            return

        def run() -> None:
            try:
                self.sync_live(version)
            except Exception as exc:  # keep serving what we have; the next request tries again
                log.warning("live listings not added: %s", exc)

        self._live_thread = threading.Thread(target=run, name="jaikod-live-listings", daemon=True)
        self._live_thread.start()

    def startup(self) -> None:
        if self.catalogue is None:
            self.catalogue = Catalogue.load(self.settings.lake_dir)
        try:
            self.ensure_snapshot(self.store.current_version())
        except Exception as exc:
            log.warning("snapshot not loaded at start-up: %s", exc)
        self.models.refresh()

    def ready(self) -> dict[str, Any]:
        checks = {}
        try:
            checks["redis"] = bool(self.redis.ping())
        except Exception:
            checks["redis"] = False
        checks["model"] = self.models.get(PRODUCTION) is not None
        checks["snapshot"] = self.mirror is not None
        checks["indexes"] = self.indexes.vector is not None and self.indexes.keyword is not None
        checks["warm"] = self.warm
        return checks

    # ---- background refresh (model hot-reload, snapshot pointer) ------------------------------
    def start_refresher(self, every_s: float = 5.0) -> None:
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(every_s):
                try:
                    self.models.refresh()
                    before = self.mirror
                    if self.ensure_snapshot(self.store.current_version()) is not before and self.on_snapshot:
                        self.on_snapshot()  # warm the new snapshot's indexes through every stage
                except Exception as exc:  # keep serving what we have
                    log.warning("refresh failed: %s", exc)

        self._thread = threading.Thread(target=loop, name="jaikod-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
