"""Calibration of the category confidence (issue 12): temperature scaling, ECE, the file in force."""

import numpy as np

from engines.vision.calibration import (
    expected_calibration_error,
    fit_temperature,
    load_calibration,
    reliability,
    scale,
    with_none,
)
from engines.vision.category import category_mass


def test_scale_keeps_the_order_and_sums_to_one():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(1000, 0.05), size=4).astype(np.float32)
    q = scale(p, 1.7)
    assert np.allclose(q.sum(1), 1.0, atol=1e-5)
    assert (q.argmax(1) == p.argmax(1)).all()
    assert (q.max(1) < p.max(1)).all()  # T > 1 softens
    assert scale(p, 1.0) is p


def test_ece_is_zero_when_confidence_is_accuracy_and_large_when_overconfident():
    conf = np.array([0.95] * 20 + [0.05] * 20)
    right = np.array([1] * 19 + [0] + [0] * 19 + [1])
    assert expected_calibration_error(conf, right) < 1e-9
    assert abs(expected_calibration_error(np.full(10, 0.9), np.zeros(10)) - 0.9) < 1e-9
    rows = reliability(conf, right)
    assert [r["n"] for r in rows] == [20, 20]


def test_fit_recovers_a_known_temperature():
    rng = np.random.default_rng(1)
    n, k, t_true = 4000, 13, 2.0
    logits = rng.normal(0, 3, (n, k))
    p_true = np.exp(logits / t_true)
    p_true /= p_true.sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in p_true])

    def mass_at(t):
        z = np.exp(logits / t)
        return z / z.sum(1, keepdims=True)

    assert abs(fit_temperature(mass_at, y) - t_true) < 0.2


def test_calibration_in_force_says_where_it_came_from():
    cal = load_calibration()
    assert 0.25 <= cal["temperature"] <= 8
    assert "vision_real_photos" in cal["fitted_on"] and cal["cross_validation"]["folds"] >= 2
    p = np.zeros((1, 1000), np.float32)
    p[0, 559] = 1.0  # folding chair: one class, no temperature moves it
    assert np.isclose(category_mass(p).max(), 1.0)
    assert np.allclose(with_none(category_mass(p)).sum(1), 1.0)
