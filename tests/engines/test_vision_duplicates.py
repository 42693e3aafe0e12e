"""DuplicateIndex decision logic on hand-made embeddings and hashes (no models)."""

from __future__ import annotations

import numpy as np

from engines.vision.config import VisionSettings
from engines.vision.duplicates import DuplicateIndex


def unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def test_empty_index_finds_nothing():
    assert DuplicateIndex(dim=4).search(unit([1, 0, 0, 0]), 0) is None


def test_phash_reupload_anywhere_and_embedding_needs_hash_agreement():
    s = VisionSettings(duplicate_similarity=0.9, phash_max_distance=6, near_duplicate_phash_distance=12)
    idx = DuplicateIndex(dim=4, settings=s)
    idx.add("A", unit([1, 0, 0, 0]), 0b0)
    idx.add("B", unit([0, 1, 0, 0]), (1 << 40) - 1)  # 40 bits away from A's hash
    # same hash as A, orthogonal embedding: a re-upload by hash
    hit = idx.search(unit([0, 0, 1, 0]), 0b111)
    assert hit["listing_id"] == "A" and hit["match"] == "phash"
    # close to B in embedding and within 12 bits of B's hash: near-duplicate by embedding
    hit = idx.search(unit([0.05, 1, 0, 0]), ((1 << 40) - 1) ^ 0xFF)
    assert hit["listing_id"] == "B" and hit["match"] == "embedding" and hit["similarity"] > 0.9
    # close to B in embedding but the hash disagrees: not a duplicate
    assert idx.search(unit([0.05, 1, 0, 0]), 0xFFFF_0000_0000_0000) is None


def test_exclude_skips_the_listing_itself():
    idx = DuplicateIndex(dim=4)
    idx.add("A", unit([1, 0, 0, 0]), 5)
    assert idx.search(unit([1, 0, 0, 0]), 5, exclude="A") is None
    assert len(idx) == 1
