"""JAIKOD_STACK=full on real engines: ``jaikod stack wait`` blocks until Kafka, OpenSearch and Milvus answer
(and names the one that does not), ``jaikod stack prepare`` publishes a world built on the embedded stack
into them once, and the service then serves a feed and a search from them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from deploy.stack import Engine, EngineDown, needed, wait
from gpu_core.settings import Settings
from tests.conftest import restore_db
from tests.online.conftest import known_users

ROOT = Path(__file__).resolve().parents[2]
ADDRESSES = {"kafka_bootstrap": "127.0.0.1:1", "opensearch_url": "http://127.0.0.1:1", "milvus_uri": "http://127.0.0.1:1"}


def test_needed_follows_the_backends_not_the_stack_name():
    assert needed(Settings(stack="embedded")) == []
    full = needed(Settings(stack="full", **ADDRESSES))
    assert [e.name for e in full] == ["kafka", "opensearch", "milvus"]
    assert [e.setting for e in full] == ["kafka_bootstrap", "opensearch_url", "milvus_uri"]
    only_milvus = needed(Settings(vector_backend="milvus", milvus_uri="http://127.0.0.1:1"))
    assert only_milvus == [Engine("milvus", "http://127.0.0.1:1", "milvus_uri")]


def test_wait_names_the_engine_that_does_not_answer(kafka_broker):
    up = Engine("kafka", kafka_broker.bootstrap, "kafka_bootstrap")
    assert set(wait([up], timeout_s=30)) == {"kafka"}
    down = Engine("opensearch", "http://127.0.0.1:1", "opensearch_url")
    with pytest.raises(EngineDown) as err:
        wait([up, down], timeout_s=0.5, interval_s=0.1)
    assert err.value.field == "opensearch_url" and "opensearch at http://127.0.0.1:1" in str(err.value)
    assert "kafka" not in str(err.value)


@pytest.fixture()
def full_stack_home(tiny_world, redis_server, kafka_broker, opensearch_node, milvus, tmp_path, monkeypatch):
    """A copy of the tiny world's home (built on the embedded stack) and of its Redis db, with the full
    stack's settings pointing at the session's engines."""
    from gpu_core.device import reset_backend
    from gpu_core.settings import reset_settings

    home = tmp_path / "home"
    shutil.copytree(tiny_world.home, home, ignore=shutil.ignore_patterns("lake"), symlinks=True)
    (home / "lake").symlink_to(tiny_world.lake, target_is_directory=True)
    url = redis_server.url.rsplit("/", 1)[0] + "/7"
    restore_db(url, tiny_world.dump)
    env = {"JAIKOD_HOME": str(home), "JAIKOD_REDIS_URL": url, "JAIKOD_STACK": "full",
           "JAIKOD_KAFKA_BOOTSTRAP": kafka_broker.bootstrap, "JAIKOD_OPENSEARCH_URL": opensearch_node.url,
           "JAIKOD_MILVUS_URI": milvus.uri, "JAIKOD_EVENT_STREAM": f"stack-test-{os.getpid()}",
           # behaviour, not latency: a loaded CI machine must not turn slow answers into fallbacks
           "JAIKOD_OPENSEARCH_TIMEOUT_MS": "20000", "JAIKOD_MILVUS_TIMEOUT_MS": "20000",
           "JAIKOD_REQUEST_BUDGET_MS": "60000"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    reset_settings()
    reset_backend()
    before = _engine_objects(opensearch_node.url, milvus.uri)
    yield home, env
    # the session's engines are shared: leave them as found (other tests list their collections and indexes)
    _drop_new(opensearch_node.url, milvus.uri, before)
    redis.Redis.from_url(url).flushdb()
    reset_settings()
    reset_backend()


def _engine_objects(os_url: str, milvus_uri: str) -> tuple[set[str], set[str]]:
    import httpx

    from engines.vector_milvus import client_for

    indexes = {row["index"] for row in httpx.get(f"{os_url}/_cat/indices?format=json", timeout=60).json()}
    client = client_for(milvus_uri, 60.0)
    try:
        return indexes, set(client.list_collections())
    finally:
        client.close()


def _drop_new(os_url: str, milvus_uri: str, before: tuple[set[str], set[str]]) -> None:
    import httpx

    from engines.vector_milvus import client_for

    indexes, collections = _engine_objects(os_url, milvus_uri)
    for name in indexes - before[0]:
        httpx.delete(f"{os_url}/{name}", timeout=60)
    client = client_for(milvus_uri, 60.0)
    try:
        for name in collections - before[1]:
            client.drop_collection(name)
    finally:
        client.close()


def _jaikod(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "jaikod_cli.py"), *args], cwd=ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=900)  # a loaded CI machine: minutes


def test_prepare_publishes_an_embedded_world_into_the_engines_once_then_the_service_uses_them(full_stack_home):
    from fastapi.testclient import TestClient

    from engines.search.opensearch import OpenSearchIndex
    from engines.vector_milvus import MilvusVectorIndex
    from online.app import create_app

    home, env = full_stack_home
    before = (home / "artifacts" / "index" / "CURRENT").read_text().strip()
    out = _jaikod("stack", "prepare")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "kafka answers" in out.stderr and "opensearch answers" in out.stderr and "milvus answers" in out.stderr
    assert "no OpenSearch index" in out.stderr and "no Milvus collection" in out.stderr
    version = (home / "artifacts" / "index" / "CURRENT").read_text().strip()
    assert version != before  # materialised again, on this stack
    again = _jaikod("stack", "prepare")
    assert again.returncode == 0 and "served by this stack's engines" in again.stderr, again.stderr[-2000:]
    assert (home / "artifacts" / "index" / "CURRENT").read_text().strip() == version  # nothing to redo

    with TestClient(create_app(refresher=False)) as client:
        idx = client.app.state.services.state.indexes
        assert isinstance(idx.keyword, OpenSearchIndex) and isinstance(idx.vector, MilvusVectorIndex)
        uid = known_users(env["JAIKOD_REDIS_URL"], 1)[0]
        r = client.post("/v1/feed", json={"user_id": uid})
        assert r.status_code == 200, r.text
        assert len(r.json()["items"]) == 20 and "vector_index_down" not in r.json()["fallbacks_used"]
        r = client.post("/v1/search", json={"user_id": uid, "query": "iphone"})
        assert r.status_code == 200 and "keyword_index_down" not in r.json()["fallbacks_used"], r.text
        # an event goes to the Kafka topic (the full stack's bus), acknowledged once durable there
        r = client.post("/v1/events", json={"events": [{"event_id": "stack-e1", "event_type": "click", "user_id": uid,
                                                        "product_id": 1, "ts": 1_700_000_000_000}]})
        assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
        _feed_retrieval_runs_keyword_beside_vector(client.app.state.services.state, uid)


def _feed_retrieval_runs_keyword_beside_vector(state, uid: int) -> None:
    """On remote indexes the feed's keyword call (the session's last query) runs on another thread while the
    vector call runs, with the same candidates, in the same order and sources, as one after the other."""
    import threading
    import time

    import numpy as np

    from engines.search.stored import ensure_stored
    from online.candidates import RequestContext, Source
    from online.stages import retrieval
    from online.stages.user import UserStage

    def ctx() -> RequestContext:
        c = RequestContext(request_id="t" * 32, kind="feed", user_id=uid, lat=None, lon=None, device_type=-1,
                           limit=20, query="", now_ms=int(time.time() * 1000), deadline_s=time.perf_counter() + 60)
        UserStage().run(c, None, state)
        c.user.features["current_search_query"] = ensure_stored("iphone")
        return c

    threads = []
    season = retrieval.RetrievalStage.season

    def spy(kw, query, n):
        threads.append(threading.current_thread().name)
        return season(kw, query, n)

    stage = retrieval.RetrievalStage()
    stage.season = spy  # the instance's own attribute: the class stays as it is
    beside = stage.run(ctx(), None, state)
    assert threads == [threads[0]] and threads[0].startswith("retrieval")  # not the request's thread
    original = retrieval._remote
    retrieval._remote = lambda index: False
    try:
        after = stage.run(ctx(), None, state)
    finally:
        retrieval._remote = original
    assert threads[1] == threading.current_thread().name
    np.testing.assert_array_equal(np.asarray(beside.idx), np.asarray(after.idx))
    np.testing.assert_array_equal(np.asarray(beside.source), np.asarray(after.source))
    assert (np.asarray(beside.source) == Source.KEYWORD).any() and (np.asarray(beside.source) == Source.VECTOR).any()
