"""The judged-query evaluation: grading rules on hand-made titles, the judged set's shape, and a run on
the tiny world's catalogue (fast; no cold-start subprocesses)."""

from __future__ import annotations

import numpy as np

from batch.search_eval import GROUPS, evaluate, grade, load_judged, ndcg_at


def test_grades_follow_the_written_rules():
    titles = ["iphone 12 used", "ไอโฟน 13 มือสอง", "samsung galaxy", "iphone case", "sofa"]
    g = grade(titles, [["iphone", "ไอโฟน"]], [["มือสอง", "used"]])
    assert g.tolist() == [2, 2, 0, 1, 0]
    g = grade(titles, [["iphone"], ["13"]], [])
    assert g.tolist() == [1, 1, 0, 1, 0]  # some but not all need groups -> 1
    assert grade(titles, [], []).tolist() == [0] * 5
    assert ndcg_at(np.array([2, 2]), np.array([2, 2, 0])) == 1.0 and ndcg_at(np.array([0]), np.array([2])) == 0.0


def test_the_judged_set_covers_every_group():
    q = load_judged()
    assert len(q) >= 150 and {x["group"] for x in q} == set(GROUPS)
    assert all(sum(x["group"] == g for x in q) >= 20 for g in GROUPS)


def test_evaluation_runs_on_the_tiny_catalogue():
    res = evaluate(size="tiny", seed=3, cold=False)
    assert set(res["groups"]) == set(GROUPS) and res["queries"] >= 150
    nm = res["groups"]["no_match"]
    assert nm["search"]["false_fill_rate"] == 0.0 and nm["baseline"]["false_fill_rate"] == 1.0
    assert res["groups"]["transliterations"]["search"]["p20"] > res["groups"]["transliterations"]["baseline"]["p20"]
