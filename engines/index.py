"""Retrieval indexes, built by the batch materialiser and loaded by the service.

* :class:`VectorIndex` — faiss inner-product search over L2-normalised product vectors: exact
  ``IndexFlatIP`` up to ``vector_ivf_threshold`` listings (500k: exact, ~1.5 ms for k = 3,000 on the demo
  world, where IVF's recall@1000 stayed below 0.9), ``IndexIVFFlat`` above it (``vector_nlist``,
  ``vector_nprobe`` settings; nprobe applied at load);
  moved to the GPU (faiss-gpu) when the backend is a GPU and faiss was built with CUDA.
  ``vector_backend=milvus`` serves the same interface from a Milvus collection
  (:class:`engines.vector_milvus.MilvusVectorIndex`; :func:`build_vector_index` / :func:`load_vector_index`
  pick the backend), which also applies :class:`HardRules` while it searches.
* :class:`KeywordIndex` — the keyword index before issue 11: BM25 (``bm25s``) over titles tokenised by
  :func:`engines.text.tokenize.tokenize` (pythainlp ``newmm`` for Thai, words for English). The service
  now serves :class:`engines.search.index.SearchIndex`; this one is kept as the baseline the search
  evaluation (``jaikod search eval``) prints side by side.

On disk, one folder per snapshot version: ``vectors.faiss``, ``vector_ids.npy`` (or ``vectors.milvus.json``), ``search/`` (the
keyword index), ``manifest.json``.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.text.tokenize import tokenize
from gpu_core.checksums import ArtifactCorrupt, check, file_digests
from gpu_core.device import backend

log = logging.getLogger(__name__)


class IndexError_(RuntimeError):
    """An index cannot serve (missing file, corrupt, not loaded)."""


@dataclass(frozen=True)
class HardRules:
    """The hard rules a vector index may apply while it searches (Milvus: a filter expression over scalar
    fields). Always a superset of what the filter stage keeps, which applies the rules exactly whatever
    the index did: an index that ignores them (faiss) only returns a pool with more candidates to drop."""

    banned_categories: tuple[int, ...] = ()
    banned_sellers: tuple[int, ...] = ()
    box: tuple[float, float, float, float] | None = None  # lat_min, lat_max, lon_min, lon_max (degrees)


class SideListings:
    """Listings added after the build (intake), held in process and searched exactly beside the built index,
    merged by score. :meth:`with_listings` returns a shallow copy (the built index or its connection shared).
    Subclasses set ``dim`` and implement ``_search_built(q, k, rules)`` -> (ids, scores) best first."""

    applies_rules = False  # True: the built index honours HardRules (the side set never does)
    dim: int

    def _side(self, extra_ids: np.ndarray | None, extra_vectors: np.ndarray | None) -> None:
        self.extra_ids = np.empty(0, np.int64) if extra_ids is None else np.asarray(extra_ids, np.int64)
        self.extra_vectors = (np.empty((0, self.dim), np.float32) if extra_vectors is None
                              else np.ascontiguousarray(extra_vectors, dtype=np.float32))

    def with_listings(self, ids: np.ndarray, vectors: np.ndarray):
        """This index plus listings ``ids`` (ids it holds already are replaced in the side set)."""
        ids = np.asarray(ids, np.int64)
        keep = ~np.isin(self.extra_ids, ids)
        out = copy.copy(self)
        out._side(np.concatenate([self.extra_ids[keep], ids]),
                  np.concatenate([self.extra_vectors[keep], np.asarray(vectors, np.float32)]))
        return out

    def search(self, query: np.ndarray, k: int, rules: HardRules | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(product ids, scores) of the k nearest products to one query vector."""
        q = np.ascontiguousarray(np.asarray(query, dtype=np.float32).reshape(-1))
        ids, sc = self._search_built(q, k, rules)
        if not len(self.extra_ids):
            return ids, sc
        ids = np.concatenate([ids, self.extra_ids])
        sc = np.concatenate([sc, (self.extra_vectors @ q).astype(np.float32)])
        order = np.argsort(-sc, kind="stable")[:k]
        return ids[order], sc[order]

    def _search_built(self, q: np.ndarray, k: int, rules: HardRules | None) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


RULE_FIELDS = ("category", "seller", "lat", "lon")  # per listing, aligned with the index's ids


class VectorIndex(SideListings):
    """faiss over the snapshot's listings. Built with the hard rules' fields (``attrs``: category, seller,
    lat, lon per listing), it applies :class:`HardRules` while it searches: the listings a rule excludes
    are left out by an ``IDSelectorBitmap``, so the k nearest are k eligible ones and the pool the filter
    stage cuts holds ~``n_candidates`` after the distance rule, not half of it (issue 16.3). Without them
    (an index built before), the rules are left to the filter stage."""

    def __init__(self, index, ids: np.ndarray, extra_ids: np.ndarray | None = None,
                 extra_vectors: np.ndarray | None = None, attrs: dict[str, np.ndarray] | None = None):
        self.index = index
        self.dim = index.d
        self.ids = np.asarray(ids, dtype=np.int64)
        self._on_gpu = False  # set by to_device
        self._xb: np.ndarray | None = None  # the exact index's vectors, read on first use (_flat_vectors)
        self._bans: tuple[tuple, np.ndarray] | None = None  # the last admin bans and their mask (_banned_mask)
        self.attrs = None
        if attrs is not None and all(f in attrs for f in RULE_FIELDS):
            self.attrs = {f: np.asarray(attrs[f], np.float64 if f in ("lat", "lon") else np.int64)
                          for f in RULE_FIELDS}
        self._side(extra_ids, extra_vectors)

    @property
    def applies_rules(self) -> bool:  # type: ignore[override]
        return self.attrs is not None and not self._on_gpu

    def _flat_vectors(self) -> np.ndarray | None:
        """The exact index's vectors as one array (read once; None for IVF or a GPU index)."""
        if self._xb is None and type(self.index).__name__ == "IndexFlatIP" and not self._on_gpu:
            self._xb = self.index.reconstruct_n(0, self.index.ntotal)
        return self._xb

    def eligible(self, rules: HardRules) -> np.ndarray | None:
        """Mask of the built listings the rules keep (None: every one)."""
        a = self.attrs
        keep = self._banned_mask(rules.banned_categories, rules.banned_sellers)
        if rules.box is not None:
            lat_min, lat_max, lon_min, lon_max = rules.box
            box = (a["lat"] >= lat_min) & (a["lat"] <= lat_max) & (a["lon"] >= lon_min) & (a["lon"] <= lon_max)
            keep = box if keep is None else keep & box
        return keep

    def _banned_mask(self, categories: tuple[int, ...], sellers: tuple[int, ...]) -> np.ndarray | None:
        """Mask of the listings no admin ban excludes (None: no ban). The bans change rarely and every
        request of a user carries the same ones, so the last mask is kept (``isin`` over every listing is
        most of the rules' cost): one (key, mask) pair, replaced whole."""
        if not categories and not sellers:
            return None
        key = (categories, sellers)
        cached = self._bans
        if cached is not None and cached[0] == key:
            return cached[1]
        a = self.attrs
        keep = np.ones(len(a["seller"]), bool)
        if categories:
            keep &= ~np.isin(a["category"], categories)
        if sellers:
            keep &= ~np.isin(a["seller"], sellers)
        keep.flags.writeable = False
        self._bans = (key, keep)
        return keep

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, ivf_threshold: int = 500_000, nlist: int | None = None,
              nprobe: int = 64, seed: int = 0, attrs: dict[str, np.ndarray] | None = None) -> VectorIndex:
        import faiss

        x = np.ascontiguousarray(vectors, dtype=np.float32)
        d = x.shape[1]
        if len(x) < ivf_threshold:
            index = faiss.IndexFlatIP(d)
        else:
            nlist = nlist or int(4 * np.sqrt(len(x)))
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(seed)
            sample = x[rng.choice(len(x), size=min(len(x), 64 * nlist), replace=False)]
            index.train(sample)
            index.nprobe = nprobe
        index.add(x)
        return cls(index, ids, attrs=attrs)

    def to_device(self) -> VectorIndex:
        if backend().is_gpu:
            try:
                import faiss

                res = faiss.StandardGpuResources()
                self.index = faiss.index_cpu_to_gpu(res, 0, self.index)
                self._on_gpu = True  # GPU indexes take no IDSelector: the filter stage applies the rules
            except (AttributeError, RuntimeError) as exc:  # faiss-cpu build
                log.info("faiss GPU unavailable, vector index stays on CPU: %s", exc)
        return self

    def _search_built(self, q: np.ndarray, k: int, rules: HardRules | None) -> tuple[np.ndarray, np.ndarray]:
        keep = self.eligible(rules) if rules is not None and self.applies_rules else None
        k = min(k, len(self.ids))
        if keep is None or keep.all():
            scores, idx = self.index.search(q.reshape(1, -1), k)
            ok = idx[0] >= 0
            return self.ids[idx[0][ok]], scores[0][ok]
        n_keep = int(keep.sum())
        if n_keep == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        k = min(k, n_keep)
        xb = self._flat_vectors()
        if xb is not None:  # exact index: one BLAS pass over every listing, then the k best eligible ones
            rows = np.flatnonzero(keep)
            sc = (xb @ q)[rows]  # selecting among the eligible only: argpartition over fewer, nothing negated
            top = np.argpartition(sc, len(sc) - k)[len(sc) - k:] if k < len(sc) else np.arange(len(sc))
            top = top[np.argsort(-sc[top], kind="stable")]
            return self.ids[rows[top]], sc[top].astype(np.float32)
        import faiss

        bitmap = np.packbits(keep, bitorder="little")  # bit i of byte i >> 3 = listing i (faiss' layout)
        sel = faiss.IDSelectorBitmap(len(keep), faiss.swig_ptr(bitmap))
        params = (faiss.SearchParametersIVF(sel=sel, nprobe=self.index.nprobe) if hasattr(self.index, "nprobe")
                  else faiss.SearchParameters(sel=sel))
        scores, idx = self.index.search(q.reshape(1, -1), k, params=params)
        ok = idx[0] >= 0
        return self.ids[idx[0][ok]], scores[0][ok]

    def save(self, folder: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(folder / "vectors.faiss"))
        np.save(folder / "vector_ids.npy", self.ids)
        if self.attrs is not None:
            np.savez(folder / "vector_attrs.npz", **self.attrs)

    @classmethod
    def load(cls, folder: Path, threads: int | None = 1, nprobe: int | None = None) -> VectorIndex:
        """Load for serving. ``threads=1``: one request's k-NN is small, and OpenMP threads of several
        requests (or worker processes) spin against each other on few cores. ``nprobe`` (IVF only) overrides
        the one the index was built with."""
        import faiss

        if threads is not None:
            faiss.omp_set_num_threads(threads)
        path = folder / "vectors.faiss"
        if not path.exists():
            raise IndexError_(f"vector index missing: {path}")
        index = faiss.read_index(str(path))
        if nprobe is not None and hasattr(index, "nprobe"):
            index.nprobe = nprobe
        attrs_path = folder / "vector_attrs.npz"
        attrs = dict(np.load(attrs_path)) if attrs_path.exists() else None
        return cls(index, np.load(folder / "vector_ids.npy"), attrs=attrs).to_device()


def build_vector_index(ids: np.ndarray, vectors: np.ndarray, settings, *, version: str,
                       attrs: dict[str, np.ndarray] | None = None) -> SideListings:
    """The snapshot's vector index on the configured backend (``settings.vector_backend``): faiss in the
    version folder, or a Milvus collection of that version (``attrs``: the hard rules' fields)."""
    if settings.vector_backend == "milvus":
        from engines.vector_milvus import MilvusVectorIndex, collection_name

        return MilvusVectorIndex.build(ids, vectors, uri=settings.milvus_uri, collection=collection_name(version),
                                       attrs=attrs, index_type=settings.milvus_index, nprobe=settings.vector_nprobe,
                                       timeout_s=settings.milvus_timeout_ms / 1000.0,
                                       breaker_s=settings.milvus_breaker_s)
    return VectorIndex.build(ids, vectors, ivf_threshold=settings.vector_ivf_threshold, nlist=settings.vector_nlist,
                             nprobe=settings.vector_nprobe, attrs=attrs)


def load_vector_index(folder: Path, settings) -> SideListings:
    """The serving side of :func:`build_vector_index`."""
    if settings.vector_backend == "milvus":
        from engines.vector_milvus import MilvusVectorIndex

        return MilvusVectorIndex.load(folder, uri=settings.milvus_uri, timeout_s=settings.milvus_timeout_ms / 1000.0,
                                      breaker_s=settings.milvus_breaker_s, nprobe=settings.vector_nprobe)
    return VectorIndex.load(folder, nprobe=settings.vector_nprobe)


class KeywordIndex:
    def __init__(self, bm25, ids: np.ndarray):
        self.bm25 = bm25
        self.ids = np.asarray(ids, dtype=np.int64)

    @classmethod
    def build(cls, ids: np.ndarray, titles: list[str]) -> KeywordIndex:
        import bm25s

        bm25 = bm25s.BM25()
        bm25.index([list(tokenize(t)) or [""] for t in titles], show_progress=False)
        return cls(bm25, ids)

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(product ids, BM25 scores > 0) best first, at most k."""
        tokens = [t for t in tokenize(query) if t in self.bm25.vocab_dict]
        if not tokens:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        scores = np.asarray(self.bm25.get_scores(tokens), dtype=np.float32)
        k = min(k, int((scores > 0).sum()))
        if k == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return self.ids[top], scores[top]

    def text_match(self, query: str, product_ids: np.ndarray) -> np.ndarray:
        """Share of the query's distinct tokens found in each listing's title (the ``text_match``
        feature; same definition as :func:`engines.text.tokenize.text_match`), from the BM25 posting lists."""
        q = set(tokenize(query))
        out = np.zeros(len(product_ids), dtype=np.float32)
        if not q or not len(product_ids):
            return out
        rows = np.searchsorted(self.ids, product_ids)
        rows = np.clip(rows, 0, len(self.ids) - 1)
        known = self.ids[rows] == product_ids
        indptr, indices = self.bm25.scores["indptr"], self.bm25.scores["indices"]
        for tok in q:
            tid = self.bm25.vocab_dict.get(tok)
            if tid is None:
                continue
            posting = indices[indptr[tid]:indptr[tid + 1]]  # sorted doc rows holding the token
            pos = np.clip(np.searchsorted(posting, rows), 0, max(len(posting) - 1, 0))
            out += (len(posting) > 0) & (posting[pos] == rows) & known if len(posting) else 0
        return out / len(q)

    def save(self, folder: Path) -> None:
        self.bm25.save(str(folder / "keyword"), show_progress=False)
        np.save(folder / "keyword_ids.npy", self.ids)

    @classmethod
    def load(cls, folder: Path) -> KeywordIndex:
        import bm25s

        path = folder / "keyword"
        if not path.exists():
            raise IndexError_(f"keyword index missing: {path}")
        return cls(bm25s.BM25.load(str(path), show_progress=False), np.load(folder / "keyword_ids.npy"))


MANIFEST = "manifest.json"


def write_manifest(folder: Path, **info) -> None:
    """The folder's manifest: ``info`` and the SHA-256 of every file in it (written last)."""
    files = file_digests(folder, exclude={MANIFEST})
    (folder / MANIFEST).write_text(json.dumps({**info, "files": files}, indent=2, default=str))


def read_manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


def verify_folder(folder: Path) -> None:
    """Refuse (:class:`~gpu_core.checksums.ArtifactCorrupt`) an index folder whose files do not match its
    manifest's checksums, before faiss or bm25s reads them; a folder without a manifest or without
    checksums (written before them) passes."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        return
    try:
        files = json.loads(path.read_text()).get("files")
    except (ValueError, UnicodeDecodeError, AttributeError) as exc:
        raise ArtifactCorrupt(f"index {Path(folder).name} refused: unreadable manifest ({exc})") from None
    if files is not None:
        check(folder, files, f"index {Path(folder).name}")
