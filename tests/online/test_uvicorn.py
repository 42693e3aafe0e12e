"""The service through a real uvicorn on loopback (``--factory online.app:create_app``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=["uvicorn-factory", "jaikod-serve-2-workers"])
def server(served_world, request):
    """The app over real HTTP: as ``uvicorn --factory`` runs it, and as ``jaikod serve`` (what ``make run``
    ends with) runs it with two worker processes that receive the settings object."""
    port = _free_port()
    env = {**os.environ, "JAIKOD_HOME": str(served_world.home), "JAIKOD_REDIS_URL": served_world.redis_url,
           "JAIKOD_DEVICE": os.environ.get("JAIKOD_DEVICE", "cpu"), "JAIKOD_TEXT_TRAIN_MISSING_HEADS": "false"}
    if request.param == "uvicorn-factory":
        cmd = [sys.executable, "-m", "uvicorn", "--factory", "online.app:create_app", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning"]
    else:
        cmd = [sys.executable, "-c", "from jaikod_cli import main; main()", "serve", "--port", str(port),
               "--workers", "2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if proc.poll() is not None:
                raise AssertionError(f"uvicorn exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{base}/readyz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            raise AssertionError("uvicorn never became ready")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_feed_and_search_over_real_http(server, users, query_word_of_world):
    with httpx.Client(base_url=server, timeout=10.0) as client:
        r = client.post("/v1/feed", json={"user_id": users[0], "limit": 12})
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["items"]) == 12 and body["fallbacks_used"] == []
        assert body["model_version"].startswith("jaikod-ranker/")
        assert [it["sponsored"] for it in body["items"]].count(True) <= 2
        r = client.post("/v1/search", json={"user_id": users[0], "query": query_word_of_world})
        assert r.status_code == 200 and len(r.json()["items"]) == 20
        r = client.post("/v1/feed", json={"user_id": users[0], "limit": 0})
        assert r.status_code == 422 and r.json()["error"]["field"] == "limit"
        assert "jaikod_requests_total" in client.get("/metrics").text


@pytest.fixture()
def query_word_of_world(served_world) -> str:
    import redis

    from engines.search.index import SearchIndex
    from gpu_core.settings import get_settings

    version = redis.Redis.from_url(served_world.redis_url).get("jk:snapshot:current").decode()
    kw = SearchIndex.load(get_settings().artifacts_dir / "index" / version)
    indptr = kw.bm25.scores["indptr"]
    vocab = [(w, t) for w, t in kw.bm25.vocab_dict.items()  # title words, not parts/concepts/conditions
             if w and w[0] not in "#=@" and w.isalpha() and t + 1 < len(indptr) and not kw.plan(w).parsed.condition_only]
    return max(vocab, key=lambda kv: (indptr[kv[1] + 1] - indptr[kv[1]], kv[0]))[0]
