"""The vector index on Milvus (issue 17), behind the interface of :class:`engines.index.VectorIndex`.

* ``build`` (the materialiser) writes one collection per snapshot version (:func:`collection_name`):
  primary key ``id`` (the product id), ``vector`` (FLOAT_VECTOR, inner product over L2-normalised
  vectors, as faiss), and the scalar fields of the hard rules — ``category``, ``seller``, ``lat``,
  ``lon`` — then ``save`` writes ``vectors.milvus.json`` into the snapshot's index folder (collection,
  dimension, row count, index type), the only thing the service reads from disk.
* ``search`` turns :class:`~engines.index.HardRules` into a filter expression (banned categories and
  sellers, the user's distance as a lat/lon box that holds the whole disc), so the pool that comes back
  is already eligible; the filter stage still applies every rule exactly. Listings taken in after the
  build are searched beside it in process (:class:`~engines.index.SideListings`, as with faiss).
* Failure is fast and named: every search has a deadline (``milvus_timeout_ms``); a refused, reset or
  slow server raises :class:`~engines.index.IndexError_` (the retrieval stage answers
  ``vector_index_down``, and keyword-only when the session has a query), and for ``milvus_breaker_s``
  after a failure requests do not call Milvus at all; then one probes on a fresh client, and a success
  closes the breaker. The index connects lazily, so a service that starts before Milvus serves as soon
  as it answers.

Index types: ``FLAT`` (exact; the default — the demo world is below faiss's IVF threshold too) and
``IVF_FLAT`` (nlist 4·√n, nprobe ``vector_nprobe``); ``HNSW`` (M 16, efConstruction 200; ef = max(k, 64)
per search, as Milvus requires ef >= k) only on a Milvus server: milvus-lite's local mode refuses it
("local mode only support FLAT IVF_FLAT AUTOINDEX"). ``bench/bench_vector_backends.py`` measures recall
against faiss exact and the latency of each.

The server here is **milvus-lite 2.5** (PyPI ``milvus-lite``): Milvus's own C++ core (segcore, knowhere)
built as one binary over a local file, started as its own process on loopback
(:mod:`deploy.milvus_lite`). It is not the distributed Milvus server (no etcd, object storage or message
queue, one node); production points ``milvus_uri`` at a Milvus cluster and nothing else changes.
milvus-lite 3.x is a different program — a pure-Python reimplementation running inside the client —
that searched 100k × 64 in 200–500 ms per query here, so it is not used.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from pathlib import Path

import numpy as np

from engines.index import HardRules, IndexError_, SideListings

log = logging.getLogger(__name__)

POINTER = "vectors.milvus.json"
COLLECTION_PREFIX = "listings_"
ID, VECTOR, CATEGORY, SELLER, LAT, LON = "id", "vector", "category", "seller", "lat", "lon"
INSERT_BATCH = 1000  # milvus-lite ingests 1,000-row inserts ~3x faster per row than 5,000-row ones
MAX_TOPK = 16_384  # Milvus's limit on k
# pymilvus pings every 10 s even when idle; milvus-lite's gRPC server keeps the default policy (at most one
# ping per 5 min without data) and answers GOAWAY "too_many_pings" after a few minutes, which fails every
# call of that channel: ping only during calls, and no more often than the server allows
GRPC_OPTIONS = {"grpc.keepalive_time_ms": 300_000, "grpc.keepalive_permit_without_calls": 0}


def _pymilvus():
    """pymilvus, imported on first use (its import configures its loggers: quiet them after it)."""
    import pymilvus

    for name in ("pymilvus", "pymilvus.milvus_client"):  # a stack trace per failed call; the breaker logs once
        logging.getLogger(name).setLevel(logging.CRITICAL)
    return pymilvus


def client_for(uri: str, timeout_s: float):
    """A pymilvus client of the server at ``uri`` (its own channel: ``dedicated``, so closing it never closes
    another index's)."""
    return _pymilvus().MilvusClient(uri=uri, timeout=timeout_s, grpc_options=GRPC_OPTIONS, dedicated=True)


def collection_name(version: str) -> str:
    """The collection of one snapshot version (Milvus names: letters, digits, underscores)."""
    return COLLECTION_PREFIX + re.sub(r"[^0-9A-Za-z_]", "_", version)


def filter_expr(rules: HardRules | None) -> str:
    """The Milvus boolean expression of ``rules`` ("" = no filter). The box is rounded outwards."""
    if rules is None:
        return ""
    parts = []
    if rules.banned_categories:
        parts.append(f"{CATEGORY} not in {sorted(int(c) for c in rules.banned_categories)}")
    if rules.banned_sellers:
        parts.append(f"{SELLER} not in {sorted(int(s) for s in rules.banned_sellers)}")
    if rules.box is not None:
        lat_min, lat_max, lon_min, lon_max = rules.box

        def down(x: float) -> str:
            return f"{math.floor(x * 1e6) / 1e6:.6f}"

        def up(x: float) -> str:
            return f"{math.ceil(x * 1e6) / 1e6:.6f}"

        parts.append(f"{LAT} >= {down(lat_min)} and {LAT} <= {up(lat_max)}")
        if lon_min > -180.0 or lon_max < 180.0:
            parts.append(f"{LON} >= {down(lon_min)} and {LON} <= {up(lon_max)}")
    return " and ".join(parts)


class _Link:
    """The client and its breaker, shared by an index and its :meth:`with_listings` copies."""

    def __init__(self, uri: str, collection: str, timeout_s: float, breaker_s: float):
        self.uri, self.collection = uri, collection
        self.timeout_s, self.breaker_s = timeout_s, breaker_s
        self.client = None
        self.down_until = 0.0
        self.down: str | None = None
        self._lock = threading.Lock()

    def get(self):
        if self.down is not None and time.monotonic() < self.down_until:
            raise IndexError_(f"milvus down ({self.down}); retried after {self.breaker_s:g} s")
        with self._lock:
            if self.client is None:
                client = client_for(self.uri, self.timeout_s)
                client.load_collection(self.collection, timeout=max(self.timeout_s, 5.0))  # again after a restart
                self.client = client
        return self.client

    def failed(self, exc: BaseException) -> IndexError_:
        with self._lock:
            if self.down is None:
                log.warning("milvus at %s failed (%s); vector search skips it for %.2f s at a time", self.uri,
                            type(exc).__name__, self.breaker_s)
            self.down = type(exc).__name__
            self.down_until = time.monotonic() + self.breaker_s
            client, self.client = self.client, None  # the next probe opens a fresh channel
        if client is not None:
            try:
                client.close()
            except Exception:  # a dead channel may fail to close; it is dropped either way
                pass
        return IndexError_(f"milvus search failed: {exc}")

    def ok(self) -> None:
        if self.down is not None:
            log.warning("milvus at %s answers again (was %s)", self.uri, self.down)
            self.down = None


def _nlist(n: int) -> int:
    """IVF_FLAT lists for ``n`` vectors (4·√n, as faiss' IVF here); Milvus refuses an nprobe above it."""
    return max(1, int(4 * math.sqrt(max(n, 1))))


class MilvusVectorIndex(SideListings):
    applies_rules = True
    remote = True  # a gRPC call: the feed runs the keyword call beside it

    def __init__(self, link: _Link, dim: int, count: int, index_type: str = "FLAT", nprobe: int = 512,
                 extra_ids: np.ndarray | None = None, extra_vectors: np.ndarray | None = None):
        self.link = link
        self.dim, self.count, self.index_type, self.nprobe = dim, count, index_type, nprobe
        self._side(extra_ids, extra_vectors)

    @property
    def collection(self) -> str:
        return self.link.collection

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, *, uri: str, collection: str,
              attrs: dict[str, np.ndarray] | None = None, index_type: str = "FLAT", nprobe: int = 512,
              timeout_s: float = 0.1, breaker_s: float = 1.0) -> MilvusVectorIndex:
        """(Re)create ``collection`` with ``ids``/``vectors`` and the hard rules' fields (``attrs``: category,
        seller, lat, lon per listing; missing ones are stored as 0 / NaN), flushed and loaded."""
        pm = _pymilvus()
        DataType = pm.DataType
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        n, d = x.shape
        ids = np.asarray(ids, np.int64)
        attrs = attrs or {}
        cols = {CATEGORY: np.asarray(attrs.get(CATEGORY, np.zeros(n)), np.int64),
                SELLER: np.asarray(attrs.get(SELLER, np.zeros(n)), np.int64),
                LAT: np.asarray(attrs.get(LAT, np.full(n, np.nan)), np.float64),
                LON: np.asarray(attrs.get(LON, np.full(n, np.nan)), np.float64)}
        client = client_for(uri, 60.0)
        try:
            if client.has_collection(collection):
                client.drop_collection(collection)
            schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field(ID, DataType.INT64, is_primary=True)
            schema.add_field(VECTOR, DataType.FLOAT_VECTOR, dim=d)
            schema.add_field(CATEGORY, DataType.INT32)
            schema.add_field(SELLER, DataType.INT64)
            schema.add_field(LAT, DataType.DOUBLE)  # the mirror's float32 coordinates, held exactly
            schema.add_field(LON, DataType.DOUBLE)
            params = client.prepare_index_params()
            build = {"HNSW": {"M": 16, "efConstruction": 200},
                     "IVF_FLAT": {"nlist": _nlist(n)}}.get(index_type, {})
            params.add_index(VECTOR, index_type=index_type, metric_type="IP", params=build)
            try:
                client.create_collection(collection, schema=schema, index_params=params)
            except Exception:
                if client.has_collection(collection):  # created, then its index refused: leave nothing behind
                    client.drop_collection(collection)
                raise
            lists = {k: v.tolist() for k, v in cols.items()}
            id_list = ids.tolist()
            for lo in range(0, n, INSERT_BATCH):
                hi = min(lo + INSERT_BATCH, n)
                client.insert(collection, [{ID: id_list[i], VECTOR: x[i], CATEGORY: lists[CATEGORY][i],
                                            SELLER: lists[SELLER][i], LAT: lists[LAT][i], LON: lists[LON][i]}
                                           for i in range(lo, hi)])
            client.flush(collection)
            client.load_collection(collection)
        finally:
            client.close()
        return cls(_Link(uri, collection, timeout_s, breaker_s), d, n, index_type, nprobe)

    def _search_params(self, k: int) -> dict:
        if self.index_type == "HNSW":
            return {"metric_type": "IP", "params": {"ef": max(k, 64)}}
        if self.index_type == "IVF_FLAT":
            return {"metric_type": "IP", "params": {"nprobe": min(self.nprobe, _nlist(self.count))}}  # <= nlist
        return {"metric_type": "IP"}

    def _search_built(self, q: np.ndarray, k: int, rules: HardRules | None) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.count, MAX_TOPK)
        if k <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        try:
            client = self.link.get()  # IndexError_ at once while the breaker is open
            res = client.search(self.collection, data=[q.tolist()], limit=k, anns_field=VECTOR,
                                filter=filter_expr(rules), search_params=self._search_params(k),
                                timeout=self.link.timeout_s)
        except IndexError_:
            raise
        except Exception as exc:  # refused, reset, deadline, or a server error: one breaker for all
            raise self.link.failed(exc) from exc
        self.link.ok()
        hits = res[0]
        if hasattr(hits, "ids") and hasattr(hits, "distances"):  # pymilvus' columns: no per-hit dict look-ups
            return np.asarray(hits.ids, np.int64), np.asarray(hits.distances, np.float32)
        ids = np.fromiter((h["id"] for h in hits), np.int64, len(hits))
        scores = np.fromiter((h["distance"] for h in hits), np.float32, len(hits))
        return ids, scores

    def save(self, folder: Path) -> None:
        (Path(folder) / POINTER).write_text(json.dumps({"collection": self.collection, "dim": self.dim,
                                                        "count": self.count, "index_type": self.index_type}))

    @classmethod
    def load(cls, folder: Path, *, uri: str, timeout_s: float = 0.1, breaker_s: float = 1.0,
             nprobe: int = 512) -> MilvusVectorIndex:
        """The snapshot's collection on the server at ``uri``. A server that does not answer yet is not an
        error here (searches fail fast until it does); one that answers without the collection is."""
        path = Path(folder) / POINTER
        if not path.exists():
            raise IndexError_(f"vector index missing: {path}")
        meta = json.loads(path.read_text())
        index = cls(_Link(uri, meta["collection"], timeout_s, breaker_s), int(meta["dim"]), int(meta["count"]),
                    meta.get("index_type", "FLAT"), nprobe)
        try:
            index.link.get()
        except Exception as exc:
            if "not exist" in str(exc) or "not found" in str(exc).lower():
                raise IndexError_(f"milvus collection {meta['collection']} missing at {uri}") from exc
            index.link.failed(exc)  # not reachable yet: serve without it until it is
        return index


def drop_collections(uri: str, keep: set[str]) -> list[str]:
    """Drop the snapshot collections not in ``keep`` (the materialiser's prune); returns those dropped."""
    client = client_for(uri, 30.0)
    try:
        gone = [c for c in client.list_collections() if c.startswith(COLLECTION_PREFIX) and c not in keep]
        for c in gone:
            client.drop_collection(c)
        return gone
    finally:
        client.close()
