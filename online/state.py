"""What the service holds between requests: the product mirror of the live snapshot, the models,
the retrieval indexes and the admin overrides. Each is swapped atomically (one attribute write of a
new immutable object), so a request in flight keeps the objects it started with — no dropped
requests on a model or snapshot change."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.driver_info import DriverInfo
from redis.retry import Retry

from engines.embeddings import TitleSpace
from engines.index import SideListings, load_vector_index, verify_folder
from engines.ranker import Ranker, ScoreWeights
from engines.search.index import SearchIndex
from engines.search.opensearch import OpenSearchIndex, index_name
from gpu_core.checksums import ArtifactCorrupt, check, file_digests
from gpu_core.device import Backend, one_thread_per_request
from gpu_core.errors import FeatureStoreError, RegistryUnavailable
from gpu_core.feature_store import LiveListingKeys, OnlineStore, OverrideKeys, rt_product_key
from gpu_core.ids import ids_only
from gpu_core.lake import fetch_dir, lake_path, publish_dir, remove_tree
from gpu_core.moderation import decode_hash, listing_key
from gpu_core.redis_client import connect
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

    @cached_property
    def _lookup(self) -> Any:
        """id -> row as a hash table (pandas' khash, built on first use, once per mirror): a feed's 3,000
        look-ups take ~45 µs instead of ~350 µs of binary search. None when ids repeat (never, by
        construction; binary search then)."""
        import pandas as pd

        index = pd.Index(self.ids)
        return index if index.is_unique else None

    def index_of(self, product_ids: np.ndarray) -> np.ndarray:
        """Row of each id in this mirror, -1 where it holds none (int64)."""
        product_ids = np.asarray(product_ids, dtype=np.int64)
        if self._lookup is not None:
            return self._lookup.get_indexer(product_ids).astype(np.int64, copy=False)
        pos = np.searchsorted(self.ids, product_ids)
        pos = np.clip(pos, 0, len(self.ids) - 1)
        return np.where(self.ids[pos] == product_ids, pos, -1)


def load_model_dir(model_dir: Path, ref: ModelRef | None, be: Backend) -> Ranker:
    """A registry artifact directory -> the ranker the service scores with (one thread per request)."""
    return Ranker.load(model_dir, ref, device=be.xgb_device, nthread=1)


class ModelCache:
    """A copy of the last production model that loaded OK: the artifact's files plus ``cache.json`` (the model
    reference and the SHA-256 of every file), replaced atomically. Served when the registry is unreachable at
    start (``model_source: cache``); a copy whose files do not match is refused. ``root`` may be a prefix on
    object storage (artifacts on S3, so a fresh machine finds it): the copy is then published under
    ``<root>/v<version>/`` (one PUT per file, ``cache.json`` last) and named by ``<root>/CURRENT`` written
    after, and loading downloads it into ``fetch_dir`` first."""

    INFO = "cache.json"
    POINTER = "CURRENT"

    def __init__(self, root: Path, fetch_dir: Path | None = None):
        self.root = lake_path(root)
        self.remote = not isinstance(self.root, Path)
        self.fetch_dir = fetch_dir

    def _folder(self) -> Path:
        """Where the cached copy's files are (on object storage: the prefix ``CURRENT`` names)."""
        if not self.remote:
            return self.root
        return self.root / (self.root / self.POINTER).read_text().strip()

    def save(self, src: Path, ref: ModelRef) -> None:
        import json
        import shutil

        name = f"v{ref.version}"
        target = self.root / name if self.remote else self.root
        with publish_dir(target, last=(self.INFO,)) as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            info = {"ref": {"name": ref.name, "version": ref.version, "alias": ref.alias, "source": ref.source,
                            "run_id": ref.run_id, "metrics": ref.metrics},
                    "files": file_digests(tmp, exclude={self.INFO}), "saved_at": time.time()}
            (tmp / self.INFO).write_text(json.dumps(info, indent=2))
        if self.remote:
            (self.root / self.POINTER).write_text(name)
            for d in self.root.iterdir():
                if d.name not in (name, self.POINTER):
                    remove_tree(d)

    def version(self) -> str | None:
        import json

        try:
            return json.loads((self._folder() / self.INFO).read_text())["ref"]["version"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def load(self, be: Backend) -> Ranker:
        """The cached ranker (checksums verified first); ArtifactCorrupt or OSError when there is none
        or it is damaged."""
        import json

        folder = self._folder()
        if self.remote:
            if self.fetch_dir is None:
                raise OSError(f"model cache {self.root}: no local folder to fetch it into")
            folder = fetch_dir(folder, self.fetch_dir / folder.name)
            for d in self.fetch_dir.iterdir():  # copies of older versions
                if d.name != folder.name and not d.name.startswith("."):
                    remove_tree(d)
        try:
            info = json.loads((folder / self.INFO).read_text())
            ref = ModelRef(**info["ref"])
            files = info["files"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactCorrupt(f"model cache {self.root} refused: unreadable {self.INFO} ({exc})") from None
        check(folder, files, f"model cache {self.root}")
        return load_model_dir(folder, ref, be)


class ModelHolder:
    """Production (and staging, for the canary) rankers, hot-reloaded when a registry alias moves; the
    production model is also copied to a local cache, served when the registry is down at start."""

    def __init__(self, registry: Registry | None, be: Backend, cache_dir: Path | None = None,
                 cache_fetch_dir: Path | None = None):
        self.registry = registry
        self.be = be
        self.cache = ModelCache(cache_dir, cache_fetch_dir) if cache_dir is not None else None
        self.source: str | None = None  # where production came from: registry | cache
        self.models: dict[str, Ranker] = {}
        self.error: str | None = None
        self.unavailable: str | None = None  # the registry could not be reached at the last refresh
        self.refused: dict[str, dict[str, Any]] = {}  # alias -> the version refused (corrupt), why, what serves
        self.on_refused: Any = None  # called with "model" when a version is refused (a metric)
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
                    self.unavailable = exc.message
                    if alias == PRODUCTION:
                        self.error = exc.message
                        if alias not in self.models:
                            changed |= self._load_cache(exc.message)
                    elif self.error is None:
                        self.error = exc.message
                    continue
                cur = self.models.get(alias)
                if ref is None:
                    if cur is not None and alias == STAGING:
                        self.models = {k: v for k, v in self.models.items() if k != alias}
                        changed = True
                    continue
                if cur is not None and cur.ref is not None and cur.ref.version == ref.version:
                    if alias == PRODUCTION and self.source == "cache":
                        self.source = "registry"  # the registry is back and names the cached version
                    continue
                if self.refused.get(alias, {}).get("version") == ref.version:
                    continue  # refused once (corrupt): not downloaded, logged and counted again
                try:
                    path = self.registry.download(ref)
                    model = load_model_dir(path, ref, self.be)
                except Exception as exc:  # noqa: BLE001 - any bad artifact is refused; what is loaded serves on
                    self.error = f"cannot load {ref.label}: {exc}"
                    self.refused = {**self.refused, alias: {
                        "version": ref.version, "reason": str(exc)[:500],
                        "serving": cur.ref.version if cur is not None and cur.ref is not None else None}}
                    log.warning("model load failed (%s keeps serving): %s",
                                cur.label if cur is not None else "nothing", self.error)
                    if self.on_refused is not None:
                        self.on_refused("model")
                    continue
                self.models = {**self.models, alias: model}  # atomic swap
                self.error = None
                changed = True
                if alias == PRODUCTION:
                    self.source = "registry"
                    self._save_cache(path, ref)
        return changed

    def _save_cache(self, path: Path, ref: ModelRef) -> None:
        if self.cache is None or self.cache.version() == ref.version:
            return
        try:
            self.cache.save(path, ref)
        except Exception as exc:  # noqa: BLE001 - a cache that cannot be written never stops serving
            log.warning("model cache not written: %s", exc)

    def _load_cache(self, why: str) -> bool:
        if self.cache is None or not self.cache.root.exists():
            return False
        try:
            model = self.cache.load(self.be)
        except Exception as exc:  # noqa: BLE001 - a damaged cache is refused: a clear not-ready instead
            self.error = f"registry unavailable ({why}); model cache refused: {exc}"
            log.warning("%s", self.error)
            return False
        self.models = {**self.models, PRODUCTION: model}
        self.source = "cache"
        self.error = f"registry unavailable; serving {model.label} from the local model cache"
        log.warning("registry unavailable at start: serving %s from the local model cache", model.label)
        return True

    def get(self, alias: str = PRODUCTION) -> Ranker | None:
        return self.models.get(alias)


class IndexHolder:
    """The indexes of one snapshot version. The vector index is faiss or (``vector_backend`` ``milvus``) the
    version's Milvus collection; the keyword index is the embedded one, or (``keyword_backend``
    ``opensearch``) the same index's query understanding and relevance with retrieval on the OpenSearch node
    at ``opensearch_url`` (the version's index, written by the materialiser); a node that is down at load
    is no load error: its searches answer ``keyword_index_down`` until it answers."""

    CACHED_VERSIONS = 3  # index versions kept in the local download cache (artifacts on object storage)

    def __init__(self, root: Path, settings: Settings, cache: Path | None = None):
        self.root = root  # a local folder or a prefix on object storage (gpu_core.lake.LakePath)
        self.cache = cache if cache is not None else settings.index_cache_dir  # local copies of remote versions
        self.settings = settings  # vector_backend (faiss | milvus), keyword_backend and their knobs
        self.version: str | None = None
        self.vector: SideListings | None = None
        self.keyword: SearchIndex | OpenSearchIndex | None = None
        self.title_space: TitleSpace | None = None  # cold-start vectors of intake listings
        self.error: str | None = None
        self.refused: dict[str, str] | None = None  # the last index version refused (kept the previous)
        self.on_refused: Any = None  # called with "index" when a version is refused (a metric)

    def load(self, version: str) -> None:
        """Load the indexes of snapshot ``version``. A folder whose files do not match its manifest's
        checksums (truncated, damaged) is refused before any reader touches it; an index that is refused
        or fails to load keeps the one loaded before (``refused`` says which version and why, logged and
        counted once); only with nothing loaded before does that index go down (its retrieval fallback).
        A version on object storage is first downloaded into the local cache (faiss and the keyword index
        read local files); a store that cannot be read is refused like a damaged folder."""
        folder = self.root / version
        errors = []
        vector = keyword = space = None
        try:
            folder = fetch_dir(folder, self.cache / version)
            verify_folder(folder)
        except (ArtifactCorrupt, OSError) as exc:
            errors = [f"vector: {exc}", f"keyword: {exc}"]
            if isinstance(exc, ArtifactCorrupt) and folder == self.cache / version:
                remove_tree(folder)  # a damaged download is fetched again next time
        else:
            try:
                vector = load_vector_index(folder, self.settings)
            except Exception as exc:
                errors.append(f"vector: {exc}")
            try:
                keyword = SearchIndex.load(folder)
                st = self.settings
                if st.keyword_backend == "opensearch":
                    keyword = OpenSearchIndex(keyword, st.opensearch_url, index_name(version),
                                              timeout_s=st.opensearch_timeout_ms / 1000)
                keyword.warm()  # analyzer dictionaries, tries and the fuzzy vocabulary before it serves
            except Exception as exc:
                errors.append(f"keyword: {exc}")
            try:
                space = TitleSpace.load(folder)
            except Exception as exc:
                errors.append(f"title space: {exc}")
        if errors and (self.vector is not None or self.keyword is not None):
            kept = self.version
            vector = vector if vector is not None else self.vector
            keyword = keyword if keyword is not None else self.keyword
            space = space if space is not None else self.title_space
            self.refused = {"version": version, "serving": kept, "reason": "; ".join(errors)}
            log.warning("index %s refused, %s keeps serving: %s", version, kept, "; ".join(errors))
            if self.on_refused is not None:
                self.on_refused("index")
            self.vector, self.keyword, self.title_space = vector, keyword, space
            self.error = None if vector is not None and keyword is not None else "; ".join(errors)
            return
        self.vector, self.keyword, self.version, self.title_space = vector, keyword, version, space
        self.refused = None
        self.error = "; ".join(errors) or None
        if folder == self.cache / version:
            self._prune_cache()

    def _prune_cache(self) -> None:
        """Keep the newest :attr:`CACHED_VERSIONS` downloaded versions (the loaded indexes are in memory)."""
        cached = sorted((d for d in self.cache.iterdir() if d.is_dir() and not d.name.startswith(".")),
                        key=lambda d: d.stat().st_mtime, reverse=True)
        for d in cached[self.CACHED_VERSIONS:]:
            remove_tree(d)

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
    each wait a timeout on a fresh connection to a slow server). On a Redis Cluster the same: a node down
    fails the call at once (no retries); the client rediscovers the slot map on the next call."""
    return connect(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
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
        # the snapshot's product table is read whole, off the request path: not within the request budget
        # (a 1 M-listing mirror does not arrive within 100 ms); an injected client is used as it is
        self.bulk_store = self.store if redis_client is not None else OnlineStore(
            serving_redis(settings.redis_url, settings.snapshot_load_timeout_ms / 1000.0))
        self.registry = registry
        self.models = ModelHolder(registry, be, settings.model_cache_dir, settings.model_cache_fetch_dir)
        self.indexes = IndexHolder(settings.index_store, settings, settings.index_cache_dir)
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
            new = ProductMirror.load(self.bulk_store, version, self.be)
            self.context_row = self.bulk_store.context_row(version)
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
        one_thread_per_request()  # after faiss, XGBoost and numpy's BLAS are loaded

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
