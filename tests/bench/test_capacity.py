"""The capacity model's arithmetic (pure logic) and that it reads the committed benchmark results."""

from __future__ import annotations

import pytest

from bench.capacity import DEMO, Cost, measured_costs, nodes, plan, render

COMPONENTS = ["API (/v1/feed, /v1/search)", "event API (/v1/events, batches of 100)", "stream processor (ours)",
              "stream processor (Flink job)", "Redis (online store reads of a feed)",
              "text analysis (/v1/analyze-text)", "vision (/v1/analyze-image)", "nightly ETL (Dask, per thread)"]


def _costs(per_core: float = 100.0) -> list[Cost]:
    return [Cost(name, "units", per_core, "test", shard=name.startswith("Redis")) for name in COMPONENTS]


def test_cores_are_demand_over_planned_capacity_rounded_up_per_component():
    demand = {"rps": 120.0, "eps": 30.0, "images_per_s": 0.0, "texts_per_s": 0.0, "events_per_day": 0.0}
    rows = {r["component"]: r for r in plan(_costs(100.0), demand, utilisation=0.6)}
    api = rows["API (/v1/feed, /v1/search)"]
    assert api["load_cores"] == pytest.approx(2.0) and api["cores"] == 2  # 120 / (100 * 0.6)
    assert rows["stream processor (ours)"]["cores"] == 1  # 0.5 of a core is still a process
    assert rows["vision (/v1/analyze-image)"]["cores"] == 1 and rows["vision (/v1/analyze-image)"]["load_cores"] == 0
    # nodes count one stream engine and no Redis shard; the biggest load is named
    n, worst = nodes(list(rows.values()), node_cores=4)
    assert worst == "API (/v1/feed, /v1/search)"
    assert n == 2  # api 2 + event api 1 + ours 1 + text 1 + vision 1 + etl 1 = 7 cores -> 2 nodes of 4


def test_model_reads_the_committed_results_and_scales_with_demand():
    costs = measured_costs()
    assert {c.component for c in costs} == set(COMPONENTS) and all(c.per_core_per_s > 0 for c in costs)
    small = plan(costs, DEMO, 0.6)
    big = plan(costs, {k: v * 100 for k, v in DEMO.items()}, 0.6)
    assert all(b["load_cores"] == pytest.approx(s["load_cores"] * 100) for s, b in zip(small, big, strict=True))
    doc = render(costs, {"1x": DEMO}, 0.6, 8)
    assert "First bottleneck" in doc and "| API (/v1/feed, /v1/search) |" in doc
