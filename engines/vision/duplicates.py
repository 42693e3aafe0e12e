"""Near-duplicate listings: a faiss inner-product index over unit-length image embeddings (the Siamese
tower: one shared backbone, cosine) plus a 64-bit perceptual hash per listing.

A re-upload is an image whose pHash is within ``phash_max_distance`` bits of an indexed listing; a
near-duplicate is a faiss neighbour with cosine >= ``duplicate_similarity`` whose pHash is also within
``near_duplicate_phash_distance``.

    >>> index = DuplicateIndex()
    >>> index.add("L-1", embedding, phash(image))
    >>> index.search(other_embedding, phash(other))   # {listing_id, similarity, match} or None
"""

from __future__ import annotations

import threading

import numpy as np

from engines.vision.config import VisionSettings, get_vision_settings


class DuplicateIndex:
    """faiss inner-product index over unit embeddings + pHash table, keyed by listing id."""

    def __init__(self, dim: int = 1280, settings: VisionSettings | None = None):
        import faiss

        self.s = settings or get_vision_settings()
        self.index = faiss.IndexFlatIP(dim)
        self.ids: list[str] = []
        self.hashes = np.zeros(0, dtype=np.uint64)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, listing_id: str, embedding: np.ndarray, image_hash: int) -> None:
        with self._lock:
            self.index.add(np.ascontiguousarray(embedding.reshape(1, -1), dtype=np.float32))
            self.ids.append(str(listing_id))
            self.hashes = np.append(self.hashes, np.uint64(image_hash))

    def search(self, embedding: np.ndarray, image_hash: int, exclude: str | None = None, *,
               similarity: float | None = None, phash_distance: int | None = None) -> dict | None:
        """``{listing_id, similarity, match}`` of the best duplicate, or None. ``similarity`` and
        ``phash_distance`` override the near-duplicate pair of settings (the service passes the strict
        pair for the world's drawn images)."""
        min_sim = self.s.duplicate_similarity if similarity is None else similarity
        max_dist = self.s.near_duplicate_phash_distance if phash_distance is None else phash_distance
        with self._lock:
            if not self.ids:
                return None
            emb = np.ascontiguousarray(embedding.reshape(1, -1), dtype=np.float32)
            dist = np.bitwise_count(self.hashes ^ np.uint64(image_hash)).astype(np.int32)
            k = min(self.s.duplicate_candidates, len(self.ids))
            sims, idx = self.index.search(emb, k)
            best: tuple[float, int, str] | None = None
            close = np.flatnonzero(dist <= self.s.phash_max_distance)
            for i in close:  # exact re-uploads, anywhere in the index
                if self.ids[i] == exclude:
                    continue
                sim = float(self.index.reconstruct(int(i)) @ emb[0])
                if best is None or sim > best[0]:
                    best = (sim, int(i), "phash")
            for sim, i in zip(sims[0], idx[0], strict=True):  # near-duplicates among faiss neighbours
                if i < 0 or self.ids[i] == exclude:
                    continue
                if sim >= min_sim and dist[i] <= max_dist:
                    if best is None or sim > best[0]:
                        best = (float(sim), int(i), "embedding")
            if best is None:
                return None
            return {"listing_id": self.ids[best[1]], "similarity": round(min(best[0], 1.0), 4), "match": best[2]}
