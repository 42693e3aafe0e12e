"""The feature schema covers the seed's table; one assembly function for training and serving."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_core import schema
from gpu_core.schema import FEATURE_BY_NAME, FEATURE_VIEWS, PRODUCT_DAILY, USER_DAILY, Entity, Freshness
from kernels.features import MODEL_FEATURES, OPTIONAL_INPUTS, assemble_matrix

SEED_TABLE = {
    Entity.USER: ({"age_group", "gender", "lifetime_spend", "top_categories_30d"},
                  {"session_clicks_last_5m", "current_search_query", "last_viewed_category"}),
    Entity.PRODUCT: ({"embedding_vector", "quality_score", "condition_grade", "seller_trust_score"},
                     {"views_last_hour", "ctr_last_hour", "is_boosted_now", "stock_status"}),
    Entity.CONTEXT: ({"holiday_calendar", "avg_category_price_history"},
                     {"user_geo_latlong", "time_of_day", "device_type"}),
}


@pytest.mark.parametrize("entity", list(SEED_TABLE))
def test_every_seed_feature_is_declared_with_entity_and_freshness(entity):
    daily, realtime = SEED_TABLE[entity]
    for name in daily | realtime:
        f = FEATURE_BY_NAME[name]
        assert f.entity == entity, name
        assert f.freshness == (Freshness.DAILY if name in daily else Freshness.REALTIME), name
        assert f.dtype and f.source


def test_views_partition_the_features():
    names = [f.name for v in FEATURE_VIEWS for f in v.features]
    assert sorted(names) == sorted(FEATURE_BY_NAME)


def test_pack_unpack_roundtrip_with_defaults():
    n = 3
    cols = {"quality_score": np.array([0.1, 0.5, 0.9]), "embedding_vector": np.ones((n, 64)),
            "latlong": np.array([[13.7, 100.5]] * n)}
    rows = PRODUCT_DAILY.pack(cols, n)
    assert rows.shape == (n, PRODUCT_DAILY.width) and rows.dtype == np.float32
    back = PRODUCT_DAILY.unpack(rows)
    np.testing.assert_allclose(back["quality_score"], cols["quality_score"], rtol=1e-6)
    assert back["embedding_vector"].shape == (n, 64)
    assert back["seller_trust_score"].tolist() == [0.5] * n  # the declared default
    assert USER_DAILY.unpack(USER_DAILY.pack({}, 1))["max_distance_km"][0] == 500.0


def _columns(n, rng):
    return schema.with_defaults({
        "category": rng.integers(0, 12, n), "quality_score": rng.random(n), "price_thb": rng.random(n) * 1000,
        "latlong": np.stack([13 + rng.random(n), 100 + rng.random(n)], 1),
        "embedding_vector": rng.standard_normal((n, 64)), "user_embedding": rng.standard_normal(64),
        "top_categories_30d": np.array([3, 1, -1]), "user_geo_latlong": np.array([13.75, 100.5]),
        "avg_category_price_history": rng.random(12) * 500 + 1, "time_of_day": 21.5, "last_viewed_category": 3,
    })


def test_assemble_matrix_shape_and_derived_columns():
    rng = np.random.default_rng(0)
    cols = _columns(50, rng)
    X = assemble_matrix(cols)
    assert X.shape == (50, len(MODEL_FEATURES)) and X.dtype == np.float32
    j = MODEL_FEATURES.index
    aff = X[:, j("category_affinity")]
    np.testing.assert_allclose(aff[cols["category"] == 3], 1.0)
    np.testing.assert_allclose(aff[cols["category"] == 1], 0.67, rtol=1e-6)
    assert (aff[~np.isin(cols["category"], [1, 3])] == 0).all()
    assert (X[cols["category"] == 3, j("last_viewed_match")] == 1).all()
    assert (X[:, j("distance_km")] < 200).all()
    np.testing.assert_allclose(X[:, j("hour_sin")], np.sin(21.5 * 2 * np.pi / 24), rtol=1e-5)


def test_per_row_and_broadcast_inputs_agree():
    """Training passes per-row user columns, serving passes them once: same matrix."""
    rng = np.random.default_rng(1)
    n = 20
    cols = _columns(n, rng)
    per_row = dict(cols)
    per_row["user_embedding"] = np.tile(cols["user_embedding"], (n, 1))
    per_row["top_categories_30d"] = np.tile(cols["top_categories_30d"], (n, 1))
    per_row["user_geo_latlong"] = np.tile(cols["user_geo_latlong"], (n, 1))
    per_row["avg_category_price_history"] = np.tile(cols["avg_category_price_history"], (n, 1))
    per_row["time_of_day"] = np.full(n, 21.5)
    per_row["last_viewed_category"] = np.full(n, 3)
    np.testing.assert_allclose(assemble_matrix(per_row), assemble_matrix(cols), rtol=1e-6)


def test_assemble_matrix_on_array_api_strict():
    xs = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(2)
    cols = _columns(10, rng)
    strict_cols = {k: xs.asarray(np.asarray(v)) for k, v in cols.items()}
    np.testing.assert_allclose(np.asarray(assemble_matrix(strict_cols, xp=xs)), assemble_matrix(cols), rtol=1e-5)


def test_code_of_unknown_is_default():
    assert schema.code_of(schema.CATEGORIES, ["fashion", "nope"]).tolist() == [0, -1]


def test_a_missing_assembly_input_is_named_not_defaulted():
    cols = _columns(5, np.random.default_rng(3))
    del cols["seller_trust_score"]
    with pytest.raises(KeyError, match="seller_trust_score"):
        assemble_matrix(cols)
    for name in OPTIONAL_INPUTS:  # the text-relevance inputs (0 without a query) may be absent
        cols.pop(name, None)
    cols["seller_trust_score"] = 0.5
    assert assemble_matrix(cols).shape == (5, len(MODEL_FEATURES))
