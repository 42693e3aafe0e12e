"""Embeddings: 64-d product vectors learned from interactions, user vectors from recent clicks, and a
text-based vector for cold-start products, all in one space.

* Interactions: the user x product click matrix (clicks before the holdout day, so evaluation never
  sees its own future) -> TF-IDF weighting -> truncated SVD (scikit-learn on CPU, cuML on GPU, same
  call) -> product vectors ``V = X^T U / s`` (L2-normalised).
* Cold start: every hashed character n-gram of a title (Thai and English alike) gets the mean
  interaction vector of the warm products whose titles contain it; a product without clicks gets
  the normalised mean of its n-grams' vectors (two sparse products, no iterative solver). The pure
  part is :class:`engines.embeddings.TitleSpace`, saved as ``title_space.npz`` next to the table (and by
  the materialiser in each index folder) so the service embeds a listing taken in by intake the same way.
* Users: the L2-normalised mean of the vectors of the products they clicked in the last 30 days
  (:func:`user_vectors`, the same function for training rows and for the online snapshot).

Output: ``<lake>/features/embeddings/products.parquet`` (product_id, source, e0..e63) and ``title_space.npz``.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from batch.etl import features_dir, index_of
from batch.lake import atomic_dir, read_parquet, write_parquet
from engines.embeddings import TitleSpace, normalise, title_ngrams
from gpu_core.device import backend
from gpu_core.errors import LakeError
from gpu_core.schema import EMBEDDING_DIM

USER_VECTOR_DAYS = 30


@dataclass
class EmbeddingSummary:
    products: int
    warm: int
    cold: int
    explained_variance: float
    seconds: float

    def as_rows(self) -> dict:
        return vars(self)


def _svd(n_components: int, seed: int):
    if backend().is_gpu:
        try:
            from cuml.decomposition import TruncatedSVD  # type: ignore[import-not-found]

            return TruncatedSVD(n_components=n_components, random_state=seed)
        except ImportError:
            pass
    from sklearn.decomposition import TruncatedSVD

    return TruncatedSVD(n_components=n_components, algorithm="randomized", n_iter=7, random_state=seed)


def click_matrix(clicks: pd.DataFrame, user_ids: np.ndarray, product_ids: np.ndarray) -> sp.csr_matrix:
    ui = index_of(user_ids, clicks["user_id"].to_numpy(np.int64))
    pi = index_of(product_ids, clicks["product_id"].to_numpy(np.int64))
    ok = (ui >= 0) & (pi >= 0)
    m = sp.coo_matrix((clicks["clicks"].to_numpy(np.float32)[ok], (ui[ok], pi[ok])),
                      shape=(len(user_ids), len(product_ids))).tocsr()
    m.sum_duplicates()
    return m


def read_clicks(lake: Path, days: list[dt.date]) -> pd.DataFrame:
    root = features_dir(lake) / "user_clicks"
    frames = [read_parquet(f) for d in days for f in sorted((root / f"date={d.isoformat()}").glob("*.parquet"))]
    if not frames:
        return pd.DataFrame({"user_id": np.zeros(0, np.int64), "product_id": np.zeros(0, np.int64),
                             "clicks": np.zeros(0, np.int32)})
    return pd.concat(frames, ignore_index=True)


def fit_product_vectors(clicks: pd.DataFrame, products: pd.DataFrame, users: pd.DataFrame, dim: int = EMBEDDING_DIM,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """(vectors float32 [n_products, dim], warm mask, explained variance)."""
    vectors, warm, explained, _ = fit_product_space(clicks, products, users, dim, seed)
    return vectors, warm, explained


def fit_product_space(clicks: pd.DataFrame, products: pd.DataFrame, users: pd.DataFrame, dim: int = EMBEDDING_DIM,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray, float, TitleSpace | None]:
    """:func:`fit_product_vectors` and the title space cold-start vectors come from (None: too few warm)."""
    from sklearn.feature_extraction.text import TfidfTransformer

    pids = products["product_id"].to_numpy()
    m = click_matrix(clicks, users["user_id"].to_numpy(), pids)
    m.data = np.log1p(m.data)
    item_user = TfidfTransformer(sublinear_tf=False).fit_transform(m.T.tocsr())  # products x users
    warm = np.asarray(item_user.getnnz(axis=1) > 0)
    vectors = np.zeros((len(pids), dim), dtype=np.float32)
    explained = 0.0
    n_comp = min(dim, max(1, min(item_user.shape) - 1))
    if warm.sum() > n_comp:
        svd = _svd(n_comp, seed)
        v = svd.fit_transform(item_user[warm])
        explained = float(np.sum(getattr(svd, "explained_variance_ratio_", [0.0])))
        vectors[warm, :n_comp] = np.asarray(v, dtype=np.float32)
    vectors = _normalise(vectors)
    # cold start: title text -> interaction space
    space = None
    cold = ~warm
    if warm.sum() >= 10:
        text = title_ngrams(products["title"].astype(str).tolist())
        space = TitleSpace.fit(text[warm], vectors[warm])
        if cold.any():
            vectors[cold] = space.embed_text(text[cold])
    return vectors, warm, explained, space


def user_vectors(clicks: pd.DataFrame, user_ids: np.ndarray, product_ids: np.ndarray,
                 product_vectors: np.ndarray) -> np.ndarray:
    """L2-normalised click-weighted mean of product vectors per user (zeros without clicks)."""
    m = click_matrix(clicks, user_ids, product_ids)
    return _normalise(np.asarray(m @ product_vectors, dtype=np.float32))


_normalise = normalise


def run_embeddings(lake: Path, as_of: dt.date, seed: int = 0, holdout_days: int = 1) -> EmbeddingSummary:
    """Fit on clicks before the holdout (the last ``holdout_days`` up to ``as_of``); write the table."""
    t0 = time.perf_counter()
    dims = features_dir(lake) / "dims"
    if not (dims / "products.parquet").exists():
        raise LakeError(f"missing {dims / 'products.parquet'}: run `jaikod batch etl` first", field="lake")
    products = read_parquet(dims / "products.parquet")
    users = read_parquet(dims / "users.parquet")
    root = features_dir(lake) / "user_clicks"
    days = sorted(dt.date.fromisoformat(p.name.split("=")[1]) for p in root.glob("date=*"))
    fit_days = [d for d in days if d <= as_of - dt.timedelta(days=holdout_days)]
    vectors, warm, explained, space = fit_product_space(read_clicks(lake, fit_days), products, users, seed=seed)
    df = pd.DataFrame(vectors, columns=[f"e{i}" for i in range(vectors.shape[1])])
    df.insert(0, "source", np.where(warm, "interactions", "text"))
    df.insert(0, "product_id", products["product_id"].to_numpy())
    with atomic_dir(features_dir(lake) / "embeddings") as tmp:
        write_parquet(df, tmp / "products.parquet")
        if space is not None:
            space.save(tmp)
    return EmbeddingSummary(len(df), int(warm.sum()), int((~warm).sum()), round(explained, 4),
                            round(time.perf_counter() - t0, 2))


def read_product_vectors(lake: Path) -> tuple[np.ndarray, np.ndarray]:
    p = features_dir(lake) / "embeddings" / "products.parquet"
    if not p.exists():
        raise LakeError(f"missing {p}: run `jaikod batch embed` first", field="lake")
    df = read_parquet(p)
    cols = [c for c in df.columns if c.startswith("e") and c[1:].isdigit()]
    return df["product_id"].to_numpy(np.int64), df[cols].to_numpy(np.float32)
