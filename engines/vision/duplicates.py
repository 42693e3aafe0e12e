"""Near-duplicate listings: a faiss inner-product index over unit-length image embeddings (the Siamese
tower: one shared backbone, cosine) plus a 64-bit perceptual hash and a colour signature per listing.

A re-upload is an image whose pHash is within ``phash_max_distance`` bits of an indexed listing; a
near-duplicate is a faiss neighbour with cosine >= ``duplicate_similarity`` whose pHash is also within
``near_duplicate_phash_distance``. Either kind must also agree in colour
(:func:`engines.vision.imaging.colour_distance`: mean-chroma ratio <= ``duplicate_colour_chroma_ratio``
and hue distance <= ``duplicate_colour_hue_distance``): a recoloured twin of one product mock-up (the
same hoodie in blue and in orange) has the same grey layout and nearly the same embedding, but is
another listing; crop, resize, recompression, brightness, a small rotation or a caption leave the hues
where they were. An entry without a colour signature (added without one, or loaded from an index saved
before signatures existed) is matched by the hash/embedding rule alone.

    >>> index = DuplicateIndex()
    >>> index.add("L-1", embedding, phash(image), colour_signature(image))
    >>> index.search(other_embedding, phash(other), colour_signature(other))  # {listing_id, similarity, match} or None
    >>> index.save(folder); DuplicateIndex.load(folder)
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from engines.vision.config import VisionSettings, get_vision_settings
from engines.vision.imaging import COLOUR_BINS, colour_distance

FORMAT_VERSION = 2  # 1: ids + hashes + vectors; 2: + colour signatures (NaN rows = none)


class DuplicateIndex:
    """faiss inner-product index over unit embeddings + pHash and colour tables, keyed by listing id."""

    def __init__(self, dim: int = 1280, settings: VisionSettings | None = None):
        import faiss

        self.s = settings or get_vision_settings()
        self.dim = dim
        self.index = faiss.IndexFlatIP(dim)
        self.ids: list[str] = []
        self.hashes = np.zeros(0, dtype=np.uint64)
        self.colours = np.zeros((0, COLOUR_BINS), dtype=np.float32)  # NaN row: no signature
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, listing_id: str, embedding: np.ndarray, image_hash: int,
            colour: np.ndarray | None = None) -> None:
        row = np.full((1, COLOUR_BINS), np.nan, np.float32) if colour is None else \
            np.asarray(colour, np.float32).reshape(1, COLOUR_BINS)
        with self._lock:
            self.index.add(np.ascontiguousarray(embedding.reshape(1, -1), dtype=np.float32))
            self.ids.append(str(listing_id))
            self.hashes = np.append(self.hashes, np.uint64(image_hash))
            self.colours = np.concatenate([self.colours, row])

    def _colour_agrees(self, i: int, colour: np.ndarray | None) -> bool:
        stored = self.colours[i]
        if colour is None or np.isnan(stored[0]):
            return True  # the rule before colour signatures
        ratio, hue = colour_distance(np.asarray(colour, np.float32), stored)
        return ratio <= self.s.duplicate_colour_chroma_ratio and hue <= self.s.duplicate_colour_hue_distance

    def search(self, embedding: np.ndarray, image_hash: int, colour: np.ndarray | None = None,
               exclude: str | None = None, *, similarity: float | None = None,
               phash_distance: int | None = None) -> dict | None:
        """``{listing_id, similarity, match}`` of the best duplicate, or None. ``colour``: the query's
        :func:`~engines.vision.imaging.colour_signature` (None: no colour check). ``similarity`` and
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
                if self.ids[i] == exclude or not self._colour_agrees(int(i), colour):
                    continue
                sim = float(self.index.reconstruct(int(i)) @ emb[0])
                if best is None or sim > best[0]:
                    best = (sim, int(i), "phash")
            for sim, i in zip(sims[0], idx[0], strict=True):  # near-duplicates among faiss neighbours
                if i < 0 or self.ids[i] == exclude:
                    continue
                if sim >= min_sim and dist[i] <= max_dist and self._colour_agrees(int(i), colour):
                    if best is None or sim > best[0]:
                        best = (float(sim), int(i), "embedding")
            if best is None:
                return None
            return {"listing_id": self.ids[best[1]], "similarity": round(min(best[0], 1.0), 4), "match": best[2]}

    # -- persistence ------------------------------------------------------------------------
    def save(self, folder: Path | str) -> Path:
        """Write ``vectors.faiss`` and ``entries.npz`` (ids, hashes, colours) and ``meta.json`` under
        ``folder``; returns the folder."""
        import faiss

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            faiss.write_index(self.index, str(folder / "vectors.faiss"))
            np.savez(folder / "entries.npz", ids=np.array(self.ids, dtype=str), hashes=self.hashes,
                     colours=self.colours)
            (folder / "meta.json").write_text(json.dumps({"format": FORMAT_VERSION, "dim": self.dim,
                                                          "entries": len(self.ids), "colour_bins": COLOUR_BINS}))
        return folder

    @classmethod
    def load(cls, folder: Path | str, settings: VisionSettings | None = None) -> DuplicateIndex:
        """The index saved by :meth:`save`. A format-1 folder (no ``colours`` array) loads with no colour
        signature on any entry, so its entries keep the hash/embedding rule."""
        import faiss

        folder = Path(folder)
        vectors = faiss.read_index(str(folder / "vectors.faiss"))
        with np.load(folder / "entries.npz") as z:
            ids, hashes = [str(x) for x in z["ids"]], z["hashes"].astype(np.uint64)
            colours = z["colours"].astype(np.float32) if "colours" in z.files else \
                np.full((len(ids), COLOUR_BINS), np.nan, np.float32)
        if not (vectors.ntotal == len(ids) == len(hashes) == len(colours)):
            raise ValueError(f"duplicate index at {folder} is inconsistent: {vectors.ntotal} vectors, "
                             f"{len(ids)} ids, {len(hashes)} hashes, {len(colours)} colours")
        if colours.shape[1] != COLOUR_BINS:
            raise ValueError(f"duplicate index at {folder} has {colours.shape[1]}-bin colours, not {COLOUR_BINS}")
        out = cls(dim=vectors.d, settings=settings)
        out.index, out.ids, out.hashes, out.colours = vectors, ids, hashes, colours
        return out
