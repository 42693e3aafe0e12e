"""Shared fixtures: a private real Redis server per test session, settings isolated under tmp."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import hypothesis
import pytest
import redis

ROOT = Path(__file__).resolve().parents[1]
# a deployment's knobs in the caller's environment (a shell that ran `make run`, a Procfile) must not change
# what the tests check: the suite sets what it needs itself
for _knob in ("JAIKOD_READY_REQUIRES_STREAM", "JAIKOD_METRICS_PORT", "JAIKOD_WORKERS", "JAIKOD_CANARY_MIN_REQUESTS",
              "JAIKOD_CANARY_SHARE", "JAIKOD_PROMETHEUS_URL",
              "JAIKOD_BIN", "JAIKOD_ADMIN_TOKEN", "JAIKOD_LAKE", "JAIKOD_SCHEDULER", "JAIKOD_MLFLOW_URI",
              "JAIKOD_KEYWORD_BACKEND", "JAIKOD_OPENSEARCH_URL"):
    os.environ.pop(_knob, None)
SHARED_DATA = ROOT.parent / "shared" / "data"
# property tests check results, not speed: no per-example deadline (a loaded CI machine is no failure)
hypothesis.settings.register_profile("jaikod", deadline=None)
hypothesis.settings.load_profile("jaikod")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A real redis-server on a free loopback port (or the one at REDIS_URL)."""

    def __init__(self, tmp: Path, extra_args: tuple[str, ...] = ()):
        self.proc: subprocess.Popen | None = None
        self.tmp = tmp
        self.extra_args = extra_args  # later options win (e.g. "--appendonly", "yes")
        binary = shutil.which("redis-server")
        if binary:
            self.port = _free_port()
            self.url = f"redis://127.0.0.1:{self.port}/0"
            self.binary = binary
            self.start()
        else:
            self.url = os.environ.get("REDIS_URL") or os.environ.get("JAIKOD_REDIS_URL")
            if not self.url:
                pytest.skip("no redis-server binary and no REDIS_URL set")
            self.port = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.tmp),
             "--enable-debug-command", "local",  # DEBUG SLEEP makes Redis slow for real in fallback tests
             *self.extra_args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        for _ in range(200):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """A milvus-lite server (deploy.milvus_lite) on a free loopback port, started by the first test that asks."""
    from deploy.milvus_lite import MilvusLiteServer, binary

    try:
        binary()
    except FileNotFoundError as exc:
        pytest.skip(f"milvus-lite not installed: {exc}")
    server = MilvusLiteServer(tmp_path_factory.mktemp("milvus")).start()
    yield server
    server.stop()


@pytest.fixture()
def milvus(milvus_server):
    """The session's milvus-lite server, started again first if an earlier test killed it."""
    if milvus_server.proc is None or milvus_server.proc.poll() is not None:
        milvus_server.start()
    return milvus_server


@pytest.fixture()
def redis_client(redis_server):
    """A clean database on the private server."""
    if redis_server.proc is not None and redis_server.proc.poll() is not None:
        redis_server.start()  # a test stopped it on purpose
    client = redis_server.client()
    client.flushdb()
    yield client
    try:
        client.flushdb()
    except redis.ConnectionError:
        pass


@pytest.fixture()
def jaikod_env(tmp_path, monkeypatch, redis_server):
    """Settings pointing at a private home and the private Redis."""
    from gpu_core.device import reset_backend
    from gpu_core.settings import reset_settings

    monkeypatch.setenv("JAIKOD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("JAIKOD_REDIS_URL", redis_server.url)
    monkeypatch.setenv("JAIKOD_DEVICE", os.environ.get("JAIKOD_DEVICE", "cpu"))
    reset_settings()
    reset_backend()
    yield tmp_path / "home"
    reset_settings()
    reset_backend()


def dump_db(url: str) -> dict[bytes, tuple[int, bytes]]:
    """Every key of the Redis db at ``url`` as (pttl, DUMP payload)."""
    r = redis.Redis.from_url(url)
    keys = list(r.scan_iter(count=10_000))
    pipe = r.pipeline(transaction=False)
    for k in keys:
        pipe.pttl(k)
        pipe.dump(k)
    vals = pipe.execute()
    return {k: (vals[2 * i], vals[2 * i + 1]) for i, k in enumerate(keys)}


def restore_db(url: str, dump: dict[bytes, tuple[int, bytes]]) -> None:
    r = redis.Redis.from_url(url)
    r.flushdb()
    pipe = r.pipeline(transaction=False)
    for k, (pttl, payload) in dump.items():
        pipe.restore(k, max(int(pttl), 0), payload, replace=True)
    pipe.execute()


def redis_state(url: str, version: bytes) -> dict:
    """Every key and value of the db, the snapshot version replaced by a placeholder (its suffix is random)."""
    r = redis.Redis.from_url(url)
    out = {}
    for k in r.scan_iter(count=10_000):
        kind = r.type(k).decode()
        if kind == "hash":
            v = r.hgetall(k)
            v.pop(b"created_at", None)  # the snapshot's wall-clock stamp
        elif kind == "string":
            v = r.get(k)
        elif kind == "list":
            v = r.lrange(k, 0, -1)
        elif kind == "set":
            v = sorted(r.smembers(k))
        elif kind == "zset":
            v = r.zrange(k, 0, -1, withscores=True)
        else:
            v = kind
        out[k.replace(version, b"V")] = repr(v).replace(repr(version)[2:-1], "V")
    return out


def local_nightly_state(world, scratch_url: str) -> dict:
    """:func:`redis_state` of the Redis db as the tiny world's nightly left it (restored into ``scratch_url``,
    flushed after: later tests change db 1)."""
    from gpu_core.feature_store import POINTER

    restore_db(scratch_url, world.dump)
    try:
        return redis_state(scratch_url, redis.Redis.from_url(scratch_url).get(POINTER))
    finally:
        redis.Redis.from_url(scratch_url).flushdb()



def production_ranker(home: Path):
    """The ranker with alias production in the registry of the home ``home`` (settings restored after)."""
    from batch.train import load_ranker
    from gpu_core.registry import PRODUCTION, RANKER, Registry
    from gpu_core.settings import reset_settings

    before = os.environ.get("JAIKOD_HOME")
    os.environ["JAIKOD_HOME"] = str(home)
    reset_settings()
    try:
        reg = Registry()
        ref = reg.require(RANKER, PRODUCTION)
        return load_ranker(reg.download(ref), ref)
    finally:
        if before is None:
            os.environ.pop("JAIKOD_HOME", None)
        else:
            os.environ["JAIKOD_HOME"] = before
        reset_settings()


class TinyWorld:
    """A tiny world taken through the whole nightly job (etl -> embed -> train -> materialize)."""

    def __init__(self, home: Path, lake: Path, redis_url: str, nightly: dict):
        self.home = home
        self.lake = lake
        self.redis_url = redis_url
        self.nightly = nightly
        self.dump = dump_db(redis_url)  # the Redis db as the nightly left it
        self.pointer = redis.Redis.from_url(redis_url).get("jk:snapshot:current")

    def ensure_redis(self, server: RedisServer) -> None:
        """Restart the private server if a test stopped it; restore the world's db if it was lost."""
        if server.proc is not None and server.proc.poll() is not None:
            server.start()
        if redis.Redis.from_url(self.redis_url).get("jk:snapshot:current") != self.pointer:
            restore_db(self.redis_url, self.dump)

    def restore(self, server: RedisServer) -> None:
        """Back to the db the nightly left (drops overrides, replay records, real-time state)."""
        if server.proc is not None and server.proc.poll() is not None:
            server.start()
        restore_db(self.redis_url, self.dump)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory, redis_server):
    """Built once per session: world (seed 3) + nightly into a private home and Redis db 1.

    Tests must not mutate its lake or registry; Redis db 1 is restored by ``served_world``.
    """
    from gpu_core.device import reset_backend
    from gpu_core.settings import reset_settings

    home = tmp_path_factory.mktemp("tiny_home")
    lake = home / "lake"
    url = redis_server.url.rsplit("/", 1)[0] + "/1"
    mp = pytest.MonkeyPatch()
    mp.setenv("JAIKOD_HOME", str(home))
    mp.setenv("JAIKOD_REDIS_URL", url)
    mp.setenv("JAIKOD_DEVICE", os.environ.get("JAIKOD_DEVICE", "cpu"))
    reset_settings()
    reset_backend()
    try:
        from batch.nightly import run_nightly
        from batch.world.generate import build_world

        build_world("tiny", seed=3, out=lake, images=False)
        redis.Redis.from_url(url).flushdb()
        results = run_nightly(lake, announce=lambda _msg: None)
    finally:
        mp.undo()
        reset_settings()
        reset_backend()
    return TinyWorld(home, lake, url, results)


@pytest.fixture()
def world_env(tiny_world, monkeypatch, redis_server):
    """Settings pointing at the tiny world's home and Redis db (restored first if an earlier test lost it)."""
    from gpu_core.device import reset_backend
    from gpu_core.settings import reset_settings

    tiny_world.ensure_redis(redis_server)
    monkeypatch.setenv("JAIKOD_HOME", str(tiny_world.home))
    monkeypatch.setenv("JAIKOD_REDIS_URL", tiny_world.redis_url)
    monkeypatch.setenv("JAIKOD_DEVICE", os.environ.get("JAIKOD_DEVICE", "cpu"))
    reset_settings()
    reset_backend()
    yield tiny_world
    reset_settings()
    reset_backend()


class DaskCluster:
    """A real ``dask scheduler`` and ``n_workers`` ``dask worker`` processes (the installed CLI) on free
    loopback ports, one thread each; the workers import this checkout's code (PYTHONPATH)."""

    def __init__(self, tmp: Path, n_workers: int = 2):
        import sys

        binary = shutil.which("dask", path=str(Path(sys.executable).parent)) or shutil.which("dask")
        if binary is None:
            pytest.skip("the dask CLI (distributed) is not installed")
        self.address = f"tcp://127.0.0.1:{_free_port()}"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               "JAIKOD_DEVICE": os.environ.get("JAIKOD_DEVICE", "cpu")}
        self.logs = tmp
        self.procs = [subprocess.Popen(
            [binary, "scheduler", "--host", "127.0.0.1", "--port", self.address.rsplit(":", 1)[1],
             "--no-dashboard", "--no-show"], stdout=subprocess.DEVNULL, stderr=open(tmp / "scheduler.log", "wb"),
            env=env, cwd=tmp)]
        for i in range(n_workers):
            self.procs.append(subprocess.Popen(
                [binary, "worker", self.address, "--nthreads", "1", "--nworkers", "1", "--host", "127.0.0.1",
                 "--no-dashboard", "--memory-limit", "0", "--name", f"w{i}", "--local-directory", str(tmp / f"w{i}")],
                stdout=subprocess.DEVNULL, stderr=open(tmp / f"worker{i}.log", "wb"), env=env, cwd=tmp))
        from distributed import Client

        try:
            with Client(self.address, timeout=60) as client:
                client.wait_for_workers(n_workers, timeout=120)
        except BaseException:
            self.stop()
            raise

    def client(self):
        from distributed import Client

        return Client(self.address, timeout=30)

    def stop(self) -> None:
        for p in reversed(self.procs):  # nothing to keep: no graceful close (it takes seconds per process)
            p.kill()
        for p in self.procs:
            p.wait(timeout=20)
        self.procs = []


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory):
    """One real Dask cluster (scheduler + 2 single-thread workers as processes) per session, started lazily."""
    cluster = DaskCluster(tmp_path_factory.mktemp("dask"))
    yield cluster
    cluster.stop()


class S3Server:
    """A real S3-compatible server (moto's ``moto.server``) in its own process on a free loopback port: out of
    this process, so its request handling does not compete with the tests' code for the GIL."""

    def __init__(self):
        import importlib.util
        import sys
        import time
        import urllib.request

        if importlib.util.find_spec("moto.server") is None or importlib.util.find_spec("flask") is None:
            pytest.skip("moto[server] is not installed")
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=2).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto server did not start on port {self.port}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def s3_server():
    """One S3-compatible server per session, started by the first test that asks."""
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture()
def s3_bucket(s3_server, monkeypatch, request):
    """A fresh bucket on the session's S3 server, with the settings (endpoint) and AWS_* credentials set."""
    import re

    from gpu_core.settings import reset_settings

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "",
                 "AWS_EC2_METADATA_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1",
                 "JAIKOD_S3_ENDPOINT_URL": s3_server.url, "JAIKOD_S3_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    reset_settings()
    from gpu_core.lake import s3_client

    bucket = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-") + f"-{os.getpid()}"
    s3_client().create_bucket(Bucket=bucket)
    yield bucket
    reset_settings()


@pytest.fixture(scope="session")
def photo():
    """The one real face photo available offline (matplotlib's sample image), or a skip."""
    from tests.support.synthetic import sample_face_photo

    img = sample_face_photo()
    if img is None:
        pytest.skip("matplotlib's sample photo grace_hopper.jpg is not installed")
    return img


class _EarlyStart:
    """A session engine (OpenSearch node, Kafka broker) started in a background thread as soon as collection
    shows a test that needs it, so its fetch and JVM start-up overlap the tests before it; ``get`` waits.
    ``make()`` builds the launcher or returns why it cannot (a skip); ``boot(engine)`` starts it and waits
    until it answers; an error of a ``skip_on`` type skips the tests that need it, any other fails them."""

    def __init__(self, name: str, make, boot, skip_on: tuple[type[BaseException], ...] = ()):
        self.name, self.make, self.boot, self.skip_on = name, make, boot, skip_on
        self.engine = None
        self.error: BaseException | None = None
        self.skip: str | None = None
        self.thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def begin(self) -> None:
        with self._lock:
            if self.thread is not None or self.skip is not None:
                return
            made = self.make()
            if isinstance(made, str):
                self.skip = made
                return
            self.engine = made
            self.thread = threading.Thread(target=self._run, name=f"{self.name}-start", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        try:
            self.boot(self.engine)
        except BaseException as exc:  # reported by the fixture, in the test that needs the engine
            self.error = exc

    def get(self):
        self.begin()
        if self.skip:
            pytest.skip(f"{self.name} not available: {self.skip}")
        self.thread.join()
        if isinstance(self.error, self.skip_on):
            pytest.skip(f"{self.name} not available: {self.error}")
        if self.error is not None:
            raise self.error
        return self.engine

    def finish(self, cleanup) -> None:
        """At the end of the session: wait for a start still under way, then ``cleanup(engine)``."""
        if self.thread is not None:
            self.thread.join()
        if self.engine is not None:
            cleanup(self.engine)


_OPENSEARCH_BASE = Path(os.environ.get("TMPDIR", "/tmp")) / f"jaikod-opensearch-{os.getpid()}"


def _make_opensearch():
    from deploy.opensearch import OpenSearchNode, missing_tools

    return missing_tools() or OpenSearchNode(_OPENSEARCH_BASE)


_OPENSEARCH = _EarlyStart("OpenSearch node", _make_opensearch, lambda node: node.start())


def pytest_collection_finish(session):
    if any("opensearch_node" in getattr(item, "fixturenames", ()) for item in session.items):
        _OPENSEARCH.begin()


def _stop_opensearch(node) -> None:
    node.stop()
    shutil.rmtree(_OPENSEARCH_BASE, ignore_errors=True)


def pytest_sessionfinish(session, exitstatus):
    _OPENSEARCH.finish(_stop_opensearch)
    _KAFKA.finish(_stop_kafka)  # also a broker begun at collection that no test ended up using


def _stop_kafka(broker) -> None:
    broker.stop()
    shutil.rmtree(broker.home, ignore_errors=True)


@pytest.fixture()
def opensearch_node():
    """The session's OpenSearch node, running (skipped with the reason when java, javac or mvn is missing)."""
    node = _OPENSEARCH.get()
    if not node.running():  # a test stopped it on purpose (keyword index down): start it again
        node.start()
    return node


def _make_kafka():
    from deploy.engines import KafkaBroker

    return KafkaBroker(Path(tempfile.mkdtemp(prefix="jaikod-kafka-")), heap_mb=384, partitions=4)


def _boot_kafka(broker) -> None:
    """Start, then one append (idempotent producer: the transaction coordinator loads) and one group join
    (the offsets topic is created) with long timeouts, so the first test pays no broker first-use costs."""
    broker.start().wait_ready(180.0)
    try:
        from confluent_kafka import Consumer, Producer
    except ImportError:
        return
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "acks": "all"})
    p.produce("jaikod-warm-up", b"1")
    assert p.flush(120) == 0, "kafka warm-up append not delivered in 120 s"
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "jaikod-warm-up",
                  "auto.offset.reset": "earliest"})
    c.subscribe(["jaikod-warm-up"])
    end = time.monotonic() + 120
    while time.monotonic() < end and not [m for m in c.consume(1, 0.5) if not m.error()]:
        pass
    c.close()


def _kafka_unavailable() -> tuple[type[BaseException], ...]:
    from deploy.engines import EngineUnavailable

    return (EngineUnavailable,)


_KAFKA = _EarlyStart("Kafka broker", _make_kafka, _boot_kafka, skip_on=_kafka_unavailable())


def _needs_kafka(item: pytest.Item) -> bool:
    params = getattr(getattr(item, "callspec", None), "params", {})
    return "kafka_broker" in getattr(item, "fixturenames", ()) or params.get("bus_backend") == "kafka"


def pytest_collection_modifyitems(session, config, items):
    if any(_needs_kafka(item) for item in items):
        _KAFKA.begin()


@pytest.fixture(scope="session")
def kafka_broker():
    """One real Kafka broker (KRaft, single node, jars from Maven Central via deploy/jvm/kafka/pom.xml) on
    free loopback ports, shared by the session: started in the background once collection shows a test
    that needs it, waited for by the first such test. Skips (with the reason) only when java/mvn is missing
    or Maven Central does not serve the jars."""
    try:
        yield _KAFKA.get()  # begins it too when a test asked dynamically (getfixturevalue), unflagged by collection
    finally:
        _KAFKA.finish(_stop_kafka)


@pytest.fixture(params=["redis", "kafka"])
def bus_backend(request, monkeypatch, jaikod_env):
    """The universal event-bus contract: the test runs on Redis Streams and on a real Kafka broker (its own
    topic and group), with the settings in the environment for the processes it starts."""
    from tests.support.buses import use_backend

    return use_backend(request.param, monkeypatch, request)
