"""The operator view in real Chromium: a real Prometheus (Debian's package) scrapes a real uvicorn; the
admin console draws its charts from Prometheus (through /v1/admin/prometheus), shows canary, overrides
and processes as tables, and bans/unbans a seller and adds sponsored inventory from the UI. Screenshot
in ``test-artifacts/operator_view.png``."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

CHROMIUM = "/usr/bin/chromium"
TOKEN = "operator-view-token"
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
# pixels of a canvas whose colour is not a grey (the series colours; axes, labels and background are greys)
COLOURED_PIXELS = """(sel) => { const c = document.querySelector(sel); const d = c.getContext("2d")
  .getImageData(0, 0, c.width, c.height).data; let n = 0;
  for (let i = 0; i < d.length; i += 4) { if (d[i + 3] > 0 && Math.max(d[i], d[i + 1], d[i + 2])
    - Math.min(d[i], d[i + 1], d[i + 2]) > 60) n++; } return n; }"""
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{what} did not start: {(proc.stderr.read() or b'').decode()[-2000:]}")
        time.sleep(0.3)


@pytest.fixture()
def stack(served_world, tmp_path):
    if not (os.path.exists(CHROMIUM) and shutil.which("prometheus")):
        pytest.skip("chromium or prometheus not installed (scripts/install.sh installs both as root)")
    pytest.importorskip("playwright.sync_api")
    api_port, prom_port = _free_port(), _free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{ROOT / 'monitoring' / 'alerts.yml'}']\n"
        f"scrape_configs: [{{job_name: jaikod-api, static_configs: [{{targets: ['127.0.0.1:{api_port}']}}]}}]\n")
    prom = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}",
                             "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAIKOD_HOME": str(served_world.home),
           "JAIKOD_REDIS_URL": served_world.redis_url, "JAIKOD_ADMIN_TOKEN": TOKEN, "JAIKOD_DEVICE": "cpu",
           "JAIKOD_PROMETHEUS_URL": f"http://127.0.0.1:{prom_port}"}
    api = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "online.app:create_app", "--host",
                            "127.0.0.1", "--port", str(api_port), "--log-level", "warning"], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait(f"http://127.0.0.1:{prom_port}/-/ready", prom, "prometheus")
        _wait(f"http://127.0.0.1:{api_port}/healthz", api, "uvicorn")
        yield f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{prom_port}"
    finally:
        for p in (api, prom):
            p.terminate()
            p.wait(timeout=20)


def test_operator_view_charts_tables_and_controls(stack, users):
    from playwright.sync_api import sync_playwright

    base, prom = stack
    with httpx.Client(base_url=base, timeout=10) as c:
        for i in range(60):  # traffic for the charts, two scrapes apart
            c.post("/v1/feed", json={"user_id": users[i % len(users)]})
            c.get("/v1/listings/987654321")
            time.sleep(0.05)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            q = c.get("/v1/admin/prometheus/query", params={"query": "sum(jaikod_http_requests_total)"},
                      headers={"X-Admin-Token": TOKEN}).json()
            if q["data"]["result"] and float(q["data"]["result"][0]["value"][1]) >= 100:
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"prometheus never scraped the API: {q}")
        bad = c.get("/v1/admin/prometheus/query", params={"query": "sum("}, headers={"X-Admin-Token": TOKEN})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "query"
        seller = c.post("/v1/feed", json={"user_id": users[0]}).json()["items"][0]["seller_id"]
        sponsor = c.post("/v1/feed", json={"user_id": users[1]}).json()["items"][3]["product_id"]
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.goto(f"{base}/admin")
        page.fill("#token", TOKEN)
        page.click("#save-token")
        # the charts query Prometheus in parallel, one query per series, so one chart's legend says nothing
        # of another's canvas: wait for a complete round (#chart-grid counts them; a round repeats every
        # 15 s) in which the legends read p99 and 404 and the plot areas have drawn data, i.e. pixels in a
        # series colour (axes and labels are grey), at least one 3x3 dot per chart
        drawn = {c: f"(({COLOURED_PIXELS})('#chart-{c} canvas') >= 9)" for c in ("latency", "rps", "status")}
        ready = ("Number(document.querySelector('#chart-grid').dataset.loads || 0) >= 1"
                 " && document.querySelector('#chart-latency .legend').textContent.includes('p99')"
                 " && document.querySelector('#chart-status .legend').textContent.includes('404')"
                 " && " + " && ".join(drawn.values()))
        try:
            page.wait_for_function(f"() => {ready}", timeout=45_000, polling=250)
        except Exception:
            got = {c: page.evaluate(COLOURED_PIXELS, f"#chart-{c} canvas") for c in drawn}
            rounds = page.evaluate("document.querySelector('#chart-grid').dataset.loads")
            pytest.fail(f"charts not drawn in 45 s: coloured pixels {got}, complete rounds {rounds}")
        assert "Prometheus unavailable" not in page.inner_text("#prom-note")
        assert "stream" in page.inner_text("#processes") and "scheduler" in page.inner_text("#processes")
        page.fill("#seller-id", str(seller))
        page.click("#ban-seller-btn")
        page.wait_for_function(f"document.querySelector('#overrides-table').textContent.includes('{seller}')")
        page.fill("#sponsor-id", str(sponsor))
        page.click("#sponsor-btn")
        page.wait_for_function("document.querySelector('#msg').textContent.includes('sponsor applied')")
        page.screenshot(path=str(ARTIFACTS / "operator_view.png"), full_page=True)
        page.click("#unban-seller-btn")
        page.wait_for_function("document.querySelector('#msg').textContent.includes('unban_seller applied')")
        browser.close()
    with httpx.Client(base_url=base, timeout=10) as c:
        got = c.get("/v1/admin/overrides", headers={"X-Admin-Token": TOKEN}).json()
    assert seller not in got["banned_sellers"] and got["sponsored_products"] >= 1
