"""DuplicateIndex decision logic on hand-made embeddings, hashes and colour signatures (no models), and
its persistence."""

from __future__ import annotations

import numpy as np
import pytest

from engines.vision.config import VisionSettings
from engines.vision.duplicates import DuplicateIndex
from engines.vision.imaging import COLOUR_BINS, colour_distance


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


def colour(hue_bin: int, chroma: float = 10.0) -> np.ndarray:
    """A colour signature with all its chroma in one hue bin."""
    c = np.zeros(COLOUR_BINS, np.float32)
    c[hue_bin] = chroma
    return c


def test_colour_must_agree_for_both_rules_unless_a_side_has_no_signature():
    idx = DuplicateIndex(dim=4)
    idx.add("A", unit([1, 0, 0, 0]), 0, colour(0))
    assert idx.search(unit([1, 0, 0, 0]), 0, colour(0))["listing_id"] == "A"  # same hue
    assert idx.search(unit([1, 0, 0, 0]), 0, colour(8)) is None  # opposite hue: another listing
    assert idx.search(unit([1, 0, 0, 0]), 0, colour(0, chroma=0.2)) is None  # grey twin of a coloured one
    assert idx.search(unit([1, 0, 0, 0]), 0)["listing_id"] == "A"  # query without signature: old rule
    idx.add("B", unit([0, 1, 0, 0]), 1 << 50)  # entry without signature: old rule
    assert idx.search(unit([0, 1, 0, 0]), 1 << 50, colour(8))["listing_id"] == "B"


def test_colour_distance_is_hue_and_chroma():
    assert colour_distance(colour(3), colour(3)) == (0.0, 0.0)
    ratio, hue = colour_distance(colour(0), colour(8))
    assert ratio == 0.0 and hue == pytest.approx(1.0)  # half a turn apart
    assert colour_distance(colour(0), colour(1))[1] == pytest.approx(2 / COLOUR_BINS)
    assert colour_distance(colour(0, 1.0), colour(8, 1.0))[1] == pytest.approx(0.25)  # nearly grey: hue counts less
    assert colour_distance(colour(0, 10.0), colour(0, 1.0))[0] == pytest.approx(np.log(13 / 4))


def test_save_load_round_trip_keeps_every_entry(tmp_path):
    idx = DuplicateIndex(dim=4)
    idx.add("A", unit([1, 0, 0, 0]), 7, colour(2))
    idx.add("B", unit([0, 1, 0, 0]), (1 << 64) - 1)  # no signature
    back = DuplicateIndex.load(idx.save(tmp_path / "dup"))
    assert back.ids == ["A", "B"] and back.hashes.tolist() == [7, (1 << 64) - 1]
    np.testing.assert_array_equal(back.colours[0], colour(2))
    assert np.isnan(back.colours[1]).all()
    assert back.search(unit([1, 0, 0, 0]), 7, colour(2))["listing_id"] == "A"
    assert back.search(unit([1, 0, 0, 0]), 7, colour(10)) is None
    assert back.search(unit([0, 1, 0, 0]), (1 << 64) - 1, colour(10))["listing_id"] == "B"


def test_an_index_saved_without_colours_loads_with_the_old_rule(tmp_path):
    import faiss

    vectors = faiss.IndexFlatIP(4)
    vectors.add(np.stack([unit([1, 0, 0, 0])]))
    faiss.write_index(vectors, str(tmp_path / "vectors.faiss"))
    np.savez(tmp_path / "entries.npz", ids=np.array(["OLD"]), hashes=np.array([9], np.uint64))  # format 1
    idx = DuplicateIndex.load(tmp_path)
    assert len(idx) == 1 and np.isnan(idx.colours).all()
    assert idx.search(unit([1, 0, 0, 0]), 9, colour(5))["listing_id"] == "OLD"  # no colour to disagree with
    idx.add("NEW", unit([0, 0, 1, 0]), (1 << 64) - 1, colour(0))
    assert idx.search(unit([0, 0, 1, 0]), (1 << 64) - 1, colour(8)) is None  # a new entry: colour counts


def test_inconsistent_saved_index_is_refused(tmp_path):
    idx = DuplicateIndex(dim=4)
    idx.add("A", unit([1, 0, 0, 0]), 7, colour(2))
    idx.save(tmp_path)
    np.savez(tmp_path / "entries.npz", ids=np.array(["A", "B"]), hashes=np.array([7, 8], np.uint64))
    with pytest.raises(ValueError, match="inconsistent"):
        DuplicateIndex.load(tmp_path)
