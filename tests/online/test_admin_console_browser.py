"""The admin console in a real headless Chromium (Debian ``chromium`` driven by Playwright): approve and
reject from the moderation queue (with the listing's image), force-boost a listing and ban a category;
a screenshot goes to ``test-artifacts/``. A real uvicorn on loopback serves the app on the tiny world."""

from __future__ import annotations

import base64
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from gpu_core.feature_store import OverrideKeys
from gpu_core.moderation import LABELS, QUEUE, listing_key

CHROMIUM = "/usr/bin/chromium"
TOKEN = "console-test-token"
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _need_browser():
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright  # noqa: F401
    except ImportError:
        pytest.skip("python package playwright not installed (pip install playwright)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(served_world, tmp_path):
    _need_browser()
    port = _free_port()
    env = {**os.environ, "JAIKOD_HOME": str(served_world.home), "JAIKOD_REDIS_URL": served_world.redis_url,
           "JAIKOD_ADMIN_TOKEN": TOKEN, "JAIKOD_LAKE": str(tmp_path / "lake"), "JAIKOD_DEVICE": "cpu",
           "JAIKOD_LISTING_TEXT_TIMEOUT_MS": "60000", "JAIKOD_TEXT_MODEL_DIR": str(tmp_path / "no-heads")}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "online.app:create_app", "--host",
                             "127.0.0.1", "--port", str(port), "--log-level", "warning"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"uvicorn did not start: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.3)
    yield base, tmp_path
    proc.terminate()
    proc.wait(timeout=20)


def _png() -> str:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (160, 160), (240, 200, 40))
    ImageDraw.Draw(img).rectangle((30, 30, 130, 130), fill=(200, 30, 30))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_console_approve_reject_and_overrides(server, served_world):
    import httpx
    from playwright.sync_api import expect, sync_playwright

    base, tmp = server
    r = redis.Redis.from_url(served_world.redis_url)
    r.delete(QUEUE, LABELS)
    unsafe = {"seller_id": 5, "category": "mobile_phones", "price_thb": 3500, "image_base64": _png()}
    a = httpx.post(f"{base}/v1/listings", timeout=120, json={**unsafe, "title": "iPhone 12 แอดไลน์ 0 8 1 2 3 4 5 6 7 8"}).json()
    b = httpx.post(f"{base}/v1/listings", timeout=120, json={**unsafe, "title": "Galaxy S21 โอนก่อน เลขบัญชี 123-4-56789-0"}).json()
    assert a["status"] == b["status"] == "in_review", (a, b)
    product = int(r.smembers(OverrideKeys.SPONSORED).pop()) if r.scard(OverrideKeys.SPONSORED) else 1

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{base}/admin")
        page.fill("#token", TOKEN)
        page.fill("#moderator", "ui-tester")
        page.click("#save-token")
        expect(page.locator("#msg")).to_have_text("connected")
        rows = page.locator("#queue tr[data-entry]")
        expect(rows).to_have_count(2)
        row_a = page.locator(f'#queue tr[data-listing="{a["listing_id"]}"]')
        expect(row_a.locator(".flag").first).to_be_visible()
        page.wait_for_function("document.querySelector('#queue img.thumb') && "
                               "document.querySelector('#queue img.thumb').naturalWidth > 0")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "admin_console_queue.png"), full_page=True)
        row_a.locator(".approve").click()
        expect(page.locator("#msg")).to_contain_text(f"approved listing {a['listing_id']}")
        row_b = page.locator(f'#queue tr[data-listing="{b["listing_id"]}"]')
        row_b.locator(".reject").click()  # without a reason: refused in the page
        expect(page.locator("#msg")).to_contain_text("reason is required")
        row_b.locator(".reason").fill("payment outside the platform")
        row_b.locator(".reject").click()
        expect(page.locator("#msg")).to_contain_text(f"rejected listing {b['listing_id']}")
        expect(page.locator("#queue")).to_contain_text("Queue is empty")
        # global overrides through the page
        page.fill("#boost-id", str(product))
        page.click("#boost-btn")
        expect(page.locator("#msg")).to_contain_text("boost applied")
        page.select_option("#ban-cat", "pets")
        page.click("#ban-btn")
        expect(page.locator("#msg")).to_contain_text("ban_category applied")
        expect(page.locator("#overrides-table")).to_contain_text("pets")
        expect(page.locator("#canary")).not_to_have_text("unknown")
        expect(page.locator("#ready")).to_contain_text("Ready")
        page.screenshot(path=str(ARTIFACTS / "admin_console.png"), full_page=True)
        browser.close()

    assert (ARTIFACTS / "admin_console.png").stat().st_size > 10_000
    assert r.hget(listing_key(a['listing_id']), "status") == b"live"
    assert r.hget(listing_key(b['listing_id']), "status") == b"rejected"
    labels = {f[b"listing_id"].decode(): (f[b"decision"], f[b"moderator"]) for _, f in r.xrange(LABELS)}
    assert labels == {str(a["listing_id"]): (b"approve", b"ui-tester"), str(b["listing_id"]): (b"reject", b"ui-tester")}
    assert r.sismember(OverrideKeys.BOOST, product)
    from gpu_core.schema import CATEGORIES

    assert r.sismember(OverrideKeys.BANNED_CATEGORIES, CATEGORIES.index("pets"))
    assert len(list((tmp / "lake" / "labels" / "moderation").rglob("*.parquet"))) == 2
