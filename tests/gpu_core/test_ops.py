"""The process-report contract (gpu_core/ops.py): stream consumers and the scheduler as /readyz reads them."""

from __future__ import annotations

import time

from gpu_core import ops


def test_consumer_beats_attach_and_go_stale(redis_client):
    now = int(time.time() * 1000)
    ops.write_beat(redis_client, ops.ConsumerBeat("c1", 11, now - 5000, now, applied=7, last_applied_ms=now - 200))
    ops.write_beat(redis_client, ops.ConsumerBeat("old", 12, now - 60_000, now - ops.STALE_MS - 1))
    rep = ops.stream_report(redis_client, {"lag": 3, "pending": 1}, now_ms=now)
    assert rep["attached"] and rep["lag"] == {"lag": 3, "pending": 1}
    by = {c["consumer"]: c for c in rep["consumers"]}
    assert by["c1"]["attached"] and not by["old"]["attached"] and by["c1"]["applied"] == 7
    assert rep["last_applied_ms"] == now - 200 and rep["last_applied_age_s"] == 0.2
    ops.remove_beat(redis_client, "c1")
    assert not ops.stream_report(redis_client, now_ms=now)["attached"]


def test_jobs_and_scheduler_heartbeat(redis_client):
    assert ops.scheduler_report(redis_client) == {"running": False, "heartbeat_age_s": None, "pid": None, "jobs": []}
    ops.write_scheduler_beat(redis_client, 42, "host", int(time.time() * 1000))
    ops.write_job(redis_client, ops.JobRecord("canary", "every 30 s", ["jaikod"], next_run_ms=5, last_result="ok"))
    rep = ops.scheduler_report(redis_client)
    assert rep["running"] and rep["pid"] == 42
    assert rep["jobs"][0]["name"] == "canary" and rep["jobs"][0]["next_run_ms"] == 5
