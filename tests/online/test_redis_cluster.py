"""The ranking service and the stream processor on a real Redis Cluster (3 masters + 3 replicas of
``redis-server --cluster-enabled yes`` on loopback, ``redis+cluster://`` URL): the same feed as on one
server (one round trip per node and step, the replay log across nodes), events applied exactly once
across a crash, and a master killed under load survived with fallbacks and no 5xx while its replica
takes over."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
import redis.connection

from gpu_core import replay_log
from gpu_core.feature_store import OnlineStore
from gpu_core.redis_client import connect, is_cluster
from gpu_core.settings import reset_settings
from online.bus import RedisStreamsBus
from online.replay import replay_request
from online.stream import StreamProcessor
from tests.online.conftest import known_users
from tests.online.test_stream import check_exact, make_events, run_until_applied
from tests.support.buses import BusBackend
from tests.support.redis_cluster import RedisClusterServers

DEGRADED = {"redis_down", "feature_store_slow", "deadline_exceeded"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    servers = RedisClusterServers(tmp_path_factory.mktemp("rcluster"), masters=3, replicas=1)
    yield servers
    servers.stop()


def flush(c: RedisClusterServers) -> None:
    for port in c.masters():
        c.node(port).flushall()


def load_world(c: RedisClusterServers, dump: dict) -> None:
    """The tiny world's Redis db (as its nightly left it on one server), restored key by key into the cluster."""
    flush(c)
    r = connect(c.url)
    pipe = r.pipeline(transaction=False)
    for k, (pttl, payload) in dump.items():
        pipe.restore(k, max(int(pttl), 0), payload, replace=True)
    pipe.execute()


@pytest.fixture()
def cluster_env(cluster, served_world, monkeypatch):
    """The tiny world's home with its Redis content in the cluster; settings on ``redis+cluster://``."""
    cluster.wait_ok()
    load_world(cluster, served_world.dump)
    monkeypatch.setenv("JAIKOD_REDIS_URL", cluster.url)
    reset_settings()
    yield served_world
    reset_settings()


def _client(app):
    from fastapi.testclient import TestClient

    return TestClient(app)


def _count_sends(mp: pytest.MonkeyPatch) -> Counter:
    """Packets sent to each node (port) from now on: a pipeline or an MGET sends one per node it reaches."""
    sends: Counter = Counter()
    send = redis.connection.AbstractConnection.send_packed_command

    def spy(self, command, check_health=True):
        sends[self.port] += 1
        return send(self, command, check_health)

    mp.setattr(redis.connection.AbstractConnection, "send_packed_command", spy)
    return sends


def feed(client, user: int) -> dict:
    r = client.post("/v1/feed", json={"user_id": user})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_feed_on_the_cluster_is_the_feed_on_one_server(cluster, cluster_env, monkeypatch):
    from online.app import create_app

    users = known_users(cluster_env.redis_url, 3)
    with _client(create_app(refresher=False, services=False)) as on_cluster:
        state = on_cluster.app.state.services.state
        assert is_cluster(state.redis)
        got = [feed(on_cluster, u) for u in users]
        # round trips (packets sent per node): a feed request is the user round trip and the candidates'
        # rings, each at most one per node; all listings' rings in one MGET are exactly one per master
        masters = set(cluster.masters())
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(state.settings, "replay_sample_rate", 0.0)  # no replay record written in this one
            sends = _count_sends(mp)
            feed(on_cluster, users[0])
            assert set(sends) <= masters and max(sends.values()) <= 2 and sum(sends.values()) <= 2 * len(masters), \
                sends
            sends.clear()
            assert len(state.redis.mget(state.mirror.rt_keys.tolist())) == len(state.mirror.ids)
            assert dict(sends) == {p: 1 for p in masters}, sends
        # the replay log: a sampled request's record is found by a scan over every node, and re-scores the same
        monkeypatch.setattr(state.settings, "replay_sample_rate", 1.0)
        rid = feed(on_cluster, users[1])["request_id"]
        assert rid in {k for k, _ in replay_log.scan(state.redis)}
        again = replay_request(state, rid)
        assert again["same_ranking"] and again["matrix_sha256_ok"] and again["changed_features"] == {}, again
    # the keys really are spread over the three masters, and the service read them there
    sizes = [cluster.node(p).dbsize() for p in cluster.masters()]
    assert len(sizes) == 3 and min(sizes) > 0, sizes
    monkeypatch.setenv("JAIKOD_REDIS_URL", cluster_env.redis_url)  # the same world on its one server
    reset_settings()
    with _client(create_app(refresher=False, services=False)) as single:
        assert not is_cluster(single.app.state.services.state.redis)
        want = [feed(single, u) for u in users]
    for g, w in zip(got, want, strict=True):
        assert not DEGRADED & set(g["fallbacks_used"]), g["fallbacks_used"]
        assert [i["product_id"] for i in g["items"]] == [i["product_id"] for i in w["items"]]
        assert g["model_version"] == w["model_version"] and g["fallbacks_used"] == w["fallbacks_used"]


def test_stream_applies_events_once_across_a_crash(cluster, jaikod_env, monkeypatch):
    """Events spread over every master (product and user rings, markers in their slots): a processor that
    dies after applying, before archiving and acknowledging, has its entries redelivered to its restart,
    which finds them applied (counters exact) and archives each once."""
    cluster.wait_ok()
    flush(cluster)
    monkeypatch.setenv("JAIKOD_REDIS_URL", cluster.url)
    monkeypatch.setenv("JAIKOD_EVENT_BUS", "redis")
    monkeypatch.setenv("JAIKOD_STREAM_BATCH", "25")
    monkeypatch.setenv("JAIKOD_STREAM_ARCHIVE_INTERVAL_S", "60")  # no archive before the crash
    monkeypatch.setenv("JAIKOD_EVENT_MIN_REPLICAS", "1")  # an append returns once the stream's replica has it
    reset_settings()
    r = connect()
    lake = jaikod_env / "lake"
    events = make_events(300, seed=5)
    bus = RedisStreamsBus(r)
    assert bus.publish(events[:200]) == (200, 0)
    first = StreamProcessor(r, lake, "worker-a")
    first.start()
    run_until_applied(first, 150)  # then it dies: nothing archived, nothing acknowledged
    assert bus.publish(events[200:] + events[:50]) == (100, 50)  # more events, and retries the bus drops
    monkeypatch.setenv("JAIKOD_STREAM_ARCHIVE_INTERVAL_S", "0.3")
    reset_settings()
    again = StreamProcessor(r, lake, "worker-a").run(max_idle_s=1.0)
    assert again["duplicates"] >= 150 and again["applied"] == 300 - first.applied
    check_exact(r, lake, events, BusBackend("redis"))
    masters = cluster.masters()
    assert all(cluster.node(p).dbsize() > 0 for p in masters), "the events' keys are on every master"


def test_a_master_killed_under_load_is_survived_with_fallbacks(cluster, cluster_env, monkeypatch):
    """Requests keep coming while one master is killed: until its replica takes over they are served
    degraded (named fallbacks), never a 5xx; after the failover they are served in full again."""
    from online.app import create_app

    users = known_users(cluster_env.redis_url, 8)
    statuses: list[int] = []
    fallbacks: list[set[str]] = []
    stop = threading.Event()
    with _client(create_app(refresher=False, services=False)) as client:
        assert not DEGRADED & set(feed(client, users[0])["fallbacks_used"])

        def load():
            i = 0
            while not stop.is_set():
                resp = client.post("/v1/feed", json={"user_id": users[i % len(users)]})
                statuses.append(resp.status_code)
                if resp.status_code == 200:
                    fallbacks.append(set(resp.json()["fallbacks_used"]))
                i += 1

        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        while len(statuses) < 5:
            time.sleep(0.01)
        victim = cluster.masters()[0]
        cluster.kill(victim)
        killed_at = len(statuses)
        try:
            deadline = time.monotonic() + 30
            recovered = False
            while time.monotonic() < deadline and not recovered:
                time.sleep(0.2)
                n = len(fallbacks)
                recovered = n > killed_at + 5 and len(cluster.masters()) == 3 and \
                    not any(DEGRADED & f for f in fallbacks[-3:])
        finally:
            stop.set()
            worker.join(timeout=30)
        assert recovered, f"not served in full again after the failover: {fallbacks[-3:]}"
    assert statuses and set(statuses) == {200}, sorted(set(statuses))
    assert any(DEGRADED & f for f in fallbacks[killed_at:]), "no request saw the master down"
    assert victim not in cluster.masters()  # its replica serves its slots now
    # nothing lost: the replica had the world
    assert OnlineStore(connect(cluster.url)).current_version() == cluster_env.pointer.decode()
    cluster.start_node(victim)  # back, as a replica of the new master
    cluster.wait_ok()
    assert cluster.node(victim).info("replication")["role"] == "slave"
