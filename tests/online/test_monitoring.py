"""Monitoring: alert rules (promtool), the fallback-rate webhook on a real loopback HTTP server, per-version
tracking by the feed observer and the gauges on /metrics, click visibility within 1 s."""

from __future__ import annotations

import http.server
import shutil
import subprocess
import threading
import time
from pathlib import Path

import orjson
import pytest

from engines.realtime import read_product_rt
from gpu_core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MON = ROOT / "monitoring"


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool missing (apt-get install prometheus; scripts/install.sh does it as root)")
def test_alert_rules_check_and_unit_tests():
    chk = subprocess.run(["promtool", "check", "rules", str(MON / "alerts.yml")], capture_output=True, text=True)
    assert chk.returncode == 0, chk.stdout + chk.stderr
    t = subprocess.run(["promtool", "test", "rules", "alerts_test.yml"], cwd=MON, capture_output=True, text=True)
    assert t.returncode == 0, t.stdout + t.stderr


def test_grafana_dashboard_covers_the_metrics():
    dash = orjson.loads((MON / "grafana-dashboard.json").read_bytes())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    for metric in ("jaikod_request_latency_seconds_bucket", "jaikod_requests_total", "fallback_rate",
                   "jaikod_feature_psi", "jaikod_model_ctr", "jaikod_stream_lag"):
        assert metric in exprs


class Hook:
    """A real HTTP server on loopback collecting webhook payloads."""

    def __init__(self):
        self.got: list[dict] = []
        hook = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                hook.got.append(orjson.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n: int, timeout: float = 10.0) -> list[dict]:
        end = time.monotonic() + timeout
        while len(self.got) < n and time.monotonic() < end:
            time.sleep(0.01)
        return self.got


@pytest.fixture()
def hook():
    h = Hook()
    yield h
    h.server.shutdown()


def test_fallback_alert_fires_above_10_percent_over_the_window(hook):
    from online.monitoring import FallbackAlerter

    now = [0.0]
    s = Settings(alert_webhook_url=hook.url, alert_window_s=60.0, alert_min_requests=20, alert_routing_key="rk")
    a = FallbackAlerter(s, clock=lambda: now[0])
    for i in range(18):  # 2 of 20 = 10 %: not above
        now[0] += 1
        assert a.observe(i < 2) is None
    now[0] += 1
    assert a.observe(False) is None and a.rate == pytest.approx(2 / 19)  # < min_requests
    now[0] += 1
    assert a.observe(False) is None and a.rate == pytest.approx(0.10)  # 20 requests, exactly 10 %
    now[0] += 1
    assert a.observe(True) == "trigger"
    got = hook.wait(1)
    assert got[0]["event_action"] == "trigger" and got[0]["routing_key"] == "rk"
    assert "14.3%" in got[0]["text"] and got[0]["payload"]["severity"] == "critical"
    assert got[0]["payload"]["custom_details"]["requests"] == 21
    now[0] += 61  # the window slides past the fallbacks
    assert a.observe(False) == "resolve"
    assert hook.wait(2)[1]["event_action"] == "resolve"


@pytest.fixture()
def observed(served_world, monkeypatch, hook):
    from fastapi.testclient import TestClient

    from gpu_core.settings import reset_settings
    from online.app import create_app

    monkeypatch.setenv("JAIKOD_ALERT_WEBHOOK_URL", hook.url)
    monkeypatch.setenv("JAIKOD_ALERT_MIN_REQUESTS", "5")
    monkeypatch.setenv("JAIKOD_CANARY_INTERVAL_S", "0")
    reset_settings()
    app = create_app(refresher=False)
    with TestClient(app) as client:
        yield client


def test_feed_observer_tracks_versions_and_exports_gauges(observed):
    from gpu_core.streams import DRIFT_PSI, VERSION_STATS

    app = observed.app
    st = app.state.services.state
    label = st.models.get("production").label
    before = int(st.redis.hget(VERSION_STATS.format(label), "requests") or 0)
    for u in range(6):
        assert observed.post("/v1/feed", json={"user_id": u}).status_code == 200
    assert observed.post("/v1/feed", json={"user_id": -1}).status_code == 422  # caller error: not counted
    app.state.services.feed_recorder.flush()
    raw = {k.decode(): int(v) for k, v in st.redis.hgetall(VERSION_STATS.format(label)).items()}
    assert raw["requests"] == before + 6
    assert sum(v for k, v in raw.items() if k.startswith("lat:")) == raw["requests"]
    st.redis.hset(DRIFT_PSI, mapping={"price_ratio": 0.31})
    st.redis.hset(VERSION_STATS.format(label), mapping={"impressions": 200, "clicks": 30})
    text = observed.get("/metrics").text
    assert 'jaikod_feature_psi{feature="price_ratio"} 0.31' in text
    assert f'jaikod_model_ctr{{model_version="{label}"}} 0.15' in text
    assert 'jaikod_stream_lag{kind="lag"}' in text
    for kind in ("model", "index"):  # at 0 before any refusal: the JaikodArtifactRefused alert's increase() needs it
        assert f'jaikod_artifacts_refused_total{{kind="{kind}"}} 0.0' in text


def test_service_fires_the_webhook_on_fallbacks(observed, hook):
    rec = observed.app.state.services.feed_recorder
    body = orjson.dumps({"model_version": "m/1", "fallbacks_used": ["feature_store_slow"]})
    for _ in range(6):
        rec.record(200, b'{"user_id": 1}', body, 0.01)
    got = hook.wait(1)
    assert got and got[0]["event_action"] == "trigger" and "100.0%" in got[0]["text"]
    assert observed.app.state.services.alerter.firing
    assert "jaikod_fallback_rate_window 1.0" in observed.get("/metrics").text


def test_click_visible_to_the_ranking_service_within_1s(observed, tmp_path):
    from online.stream import StreamProcessor

    st = observed.app.state.services.state
    pid = int(st.mirror.ids[3])
    before = read_product_rt(st.store, [pid], time.time())["views_last_hour"][0]
    import redis

    proc = StreamProcessor(redis.Redis.from_url(st.settings.redis_url), tmp_path / "lake", "t1")
    stop = threading.Event()
    th = threading.Thread(target=proc.run, args=(stop,), daemon=True)
    th.start()
    try:
        time.sleep(0.2)  # the processor is up and blocked on the stream
        ev = {"event_id": f"vis-{time.time_ns()}", "event_type": "click", "ts": int(time.time() * 1000),
              "user_id": 1, "product_id": pid}
        assert observed.post("/v1/events", json={"events": [ev]}).json() == {"accepted": 1, "duplicates": 0}
        deadline = time.monotonic() + 1.0  # the visibility budget is the poll limit
        seen = before
        while time.monotonic() < deadline and seen == before:
            seen = read_product_rt(st.store, [pid], time.time())["views_last_hour"][0]
            time.sleep(0.01)
        assert seen == before + 1
    finally:
        stop.set()
        th.join(timeout=5)
