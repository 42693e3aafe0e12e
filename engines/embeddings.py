"""The title space of cold-start listings: the pure part of the nightly embeddings
(:mod:`batch.embeddings`), shared with the service so that a listing taken in by intake gets its vector the
same way a cold-start listing of the nightly does.

Every hashed character n-gram of a title (Thai and English alike; ``char_wb`` 2-4, 2**16 buckets) gets the
normalised mean interaction vector of the warm listings whose titles contain it; a listing without clicks
gets the normalised mean of its n-grams' vectors. :class:`TitleSpace` keeps only the buckets some warm title
has (a few thousand rows, not 65,536), and is saved next to the embeddings and in each index folder.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpu_core.lake import lake_path

FILE = "title_space.npz"
N_FEATURES = 2**16


def title_ngrams(titles):
    """Hashed character n-grams of titles -> sparse CSR [n, 2**16] (L2-normalised rows)."""
    from sklearn.feature_extraction.text import HashingVectorizer

    hv = HashingVectorizer(analyzer="char_wb", ngram_range=(2, 4), n_features=N_FEATURES, alternate_sign=False,
                           norm="l2")
    return hv.transform([str(t) for t in titles]).tocsr()


def normalise(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=1, keepdims=True)
    return np.where(n > 0, v / np.maximum(n, 1e-12), 0.0).astype(np.float32)


@dataclass(frozen=True)
class TitleSpace:
    buckets: np.ndarray  # int64, sorted: the n-gram buckets some warm title has
    vectors: np.ndarray  # float32 [len(buckets), dim], L2-normalised

    @classmethod
    def fit(cls, warm_text, warm_vectors: np.ndarray) -> TitleSpace:
        """From the warm listings' n-gram matrix (:func:`title_ngrams`) and their interaction vectors."""
        full = np.asarray(warm_text.T @ warm_vectors, dtype=np.float32)  # [2**16, dim]
        buckets = np.flatnonzero(np.abs(full).sum(axis=1) > 0).astype(np.int64)
        return cls(buckets, normalise(full[buckets]))

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def embed_text(self, text) -> np.ndarray:
        """Cold-start vectors of titles already hashed by :func:`title_ngrams` -> float32 [n, dim]."""
        cols = text[:, self.buckets]
        return normalise(np.asarray(cols @ self.vectors, dtype=np.float32))

    def embed(self, titles) -> np.ndarray:
        return self.embed_text(title_ngrams(titles))

    def save(self, folder: Path) -> None:
        """Into ``folder``: a local path or a lake path (:func:`gpu_core.lake.lake_path`, e.g. ``s3://``)."""
        buf = io.BytesIO()
        np.savez(buf, buckets=self.buckets, vectors=self.vectors)
        (lake_path(folder) / FILE).write_bytes(buf.getvalue())

    @classmethod
    def load(cls, folder: Path) -> TitleSpace | None:
        """The space saved in ``folder``, or None when there is none (a world without warm listings)."""
        p = lake_path(folder) / FILE
        if not p.exists():
            return None
        z = np.load(io.BytesIO(p.read_bytes()))
        return cls(z["buckets"].astype(np.int64), z["vectors"].astype(np.float32))
