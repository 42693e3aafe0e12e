"""The Flink stream processor: a PyFlink job that reads the events topic from Kafka and applies the events
to the online store with the same code as our processor (``jaikod stream --engine flink``, or
``scripts/flink_job.sh``; it runs in the Flink venv that ``scripts/flink_venv.sh`` builds, because
apache-flink 2.2 pins pyarrow < 21 and pandas < 2.3, below the service's).

    KafkaSource (bytes, group settings.event_group) -> ApplyBatches (async, micro-batches)
    driver: OutboxArchiver (the lake) + heartbeat in jk:ops:stream

:class:`ApplyBatches` gathers the records a worker receives into batches (``stream_batch`` records, or
``flink_linger_ms`` after the first) and runs :class:`online.apply.EventApplier` on each -- the window
definitions, idempotency markers, per-version counters and flags of our own processor, one ``MULTI`` per
batch -- then appends the batch to the archive outbox (:mod:`online.outbox`). A record completes only
then, and Flink's async operator finishes its in-flight records before a checkpoint, so a checkpoint
(which commits the Kafka offsets) never passes an event that is not applied: after a crash Flink replays
from the last checkpoint and the markers make the replay count nothing twice. Poison goes to the
dead-letter stream, like ours. The driver process archives the outbox to the lake (exactly once per
event id) and reports the job in ``jk:ops:stream`` like any stream processor.

``--bounded`` reads the topic up to its end offsets at start and exits (tests, benchmarks, backfills).
The job's Python workers import this repository: the driver puts it on their ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import redis

from gpu_core import ops
from gpu_core.redis_client import connect
from gpu_core.settings import Settings, get_settings
from gpu_core.streams import STREAM_STATS, event_topic
from online.apply import EventApplier
from online.bus import entry_of
from online.outbox import OutboxArchiver, to_outbox

log = logging.getLogger("jaikod.stream")

ROOT = Path(__file__).resolve().parents[1]
CONNECTOR_JAR = "flink-sql-connector-kafka-*.jar"


def connector_jar(jvm_home: Path | None = None) -> Path:
    """The Kafka connector jar fetched by ``scripts/jvm_engine.sh fetch flink`` (deploy/jvm/flink/pom.xml)."""
    lib = (jvm_home or Path(os.environ.get("JVM_HOME_DIR", ROOT / ".jvm"))) / "flink" / "lib"
    jars = sorted(lib.glob(CONNECTOR_JAR))
    if not jars:
        raise FileNotFoundError(f"no Kafka connector jar under {lib} (run: bash scripts/jvm_engine.sh fetch flink)")
    return jars[-1]


class FlinkUnavailable(RuntimeError):
    """The Flink venv or the connector jar cannot be had here (no java/mvn, registry unreachable)."""


def ensure_flink_python(timeout_s: float = 1200.0) -> Path:
    """The Flink venv's python, created first when needed (``scripts/flink_venv.sh``: apache-flink 2.2 and
    the connector jar; a few minutes the first time, instant after)."""
    out = subprocess.run(["bash", str(ROOT / "scripts" / "flink_venv.sh")], capture_output=True, text=True,
                         timeout=timeout_s)
    if out.returncode in (3, 4):
        raise FlinkUnavailable(out.stderr.strip()[-500:] or f"flink_venv.sh exited {out.returncode}")
    if out.returncode != 0:
        raise RuntimeError(f"scripts/flink_venv.sh failed ({out.returncode}): {out.stderr[-2000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


def job_command(python: Path | str, bootstrap: str, topic: str, group: str, lake: Path | str,
                bounded: bool = False, parallelism: int = 1, consumer: str | None = None) -> list[str]:
    """The command line that runs the job (with the Flink venv's ``python``, from the repository root)."""
    cmd = [str(python), "-m", "online.flink_job", "--bootstrap", bootstrap, "--topic", topic, "--group", group,
           "--lake", str(lake), "--parallelism", str(parallelism)]
    if consumer:
        cmd += ["--consumer", consumer]
    return cmd + (["--bounded"] if bounded else [])


def job_env(**extra: str) -> dict[str, str]:
    """The environment of the job's process: the caller's, this repository first on PYTHONPATH."""
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


try:  # the job's classes need pyflink; the driver helpers above and the archiver do not
    from pyflink.datastream.functions import AsyncFunction
except ImportError:  # pragma: no cover - outside the Flink venv
    AsyncFunction = object  # type: ignore[assignment,misc]


class ApplyBatches(AsyncFunction):  # type: ignore[misc,valid-type]
    """Async function: each record waits for its micro-batch to be applied and appended to the outbox."""

    def __init__(self, redis_url: str, batch: int, linger_s: float):
        self.redis_url, self.batch, self.linger_s = redis_url, batch, linger_s

    def open(self, runtime_context: Any) -> None:
        self.r = connect(self.redis_url, cluster=False, socket_timeout=30.0, socket_connect_timeout=10.0)
        self.applier = EventApplier(self.r, get_settings())
        self.worker = f"flink-{runtime_context.get_index_of_this_subtask()}"
        self.pending: list[tuple[bytes, asyncio.Future]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.batches = 0

    def close(self) -> None:
        self.r.close()

    async def async_invoke(self, value: bytes) -> list[Any]:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self.pending.append((bytes(value), done))
        if len(self.pending) >= self.batch:
            self._flush()
        elif self.timer is None:
            self.timer = loop.call_later(self.linger_s, self._flush)
        return await done

    def _flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        batch, self.pending = self.pending, []
        if not batch:
            return
        try:
            self.apply([raw for raw, _ in batch])
        except Exception as exc:  # Redis down: fail the records, so Flink restarts from the checkpoint
            for _, f in batch:
                if not f.done():
                    f.set_exception(exc)
            return
        for _, f in batch:
            if not f.done():
                f.set_result([])

    def apply(self, payloads: list[bytes]) -> None:
        """Screen, apply (one MULTI), then append to the outbox the events that were applied or seen before."""
        self.batches += 1
        entries = [entry_of(f"{self.worker}:{self.batches}:{i}", p) for i, p in enumerate(payloads)]
        good, poison = self.applier.split(entries)
        self.applier.dead_letter(poison)
        done = self.applier.apply(good)
        refused = {e.id for e in done.refused}
        pipe = self.r.pipeline(transaction=False)
        to_outbox(pipe, [e for e in good if e.id not in refused])
        pipe.execute()


def build_env(s: Settings, bootstrap: str, topic: str, group: str, bounded: bool, parallelism: int,
              redis_url: str) -> Any:
    """The job's StreamExecutionEnvironment, sources and operators (local mini-cluster by default)."""
    from pyflink.common import Configuration, Time, Types, WatermarkStrategy
    from pyflink.common.serialization import ByteArraySchema
    from pyflink.datastream import AsyncDataStream, StreamExecutionEnvironment
    from pyflink.datastream.connectors.kafka import (
        KafkaOffsetResetStrategy,
        KafkaOffsetsInitializer,
        KafkaSource,
    )

    conf = Configuration()
    conf.set_string("python.executable", sys.executable)
    conf.set_string("python.client.executable", sys.executable)
    # hand records to the Python worker at least every flink_linger_ms (default bundles wait up to 1 s)
    conf.set_string("python.fn-execution.bundle.time", str(max(5, s.flink_linger_ms)))
    conf.set_string("python.fn-execution.bundle.size", str(max(100, s.stream_batch)))
    conf.set_string("taskmanager.memory.process.size", os.environ.get("JAIKOD_FLINK_TM_MEMORY", "1024m"))
    conf.set_string("rest.bind-address", "127.0.0.1")
    if bounded:
        conf.set_string("restart-strategy.type", "none")
    else:
        conf.set_string("restart-strategy.type", "fixed-delay")
        conf.set_string("restart-strategy.fixed-delay.attempts", "2147483647")
        conf.set_string("restart-strategy.fixed-delay.delay", "2 s")
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(parallelism)
    env.add_jars(connector_jar().as_uri())
    if not bounded:
        env.enable_checkpointing(int(os.environ.get("JAIKOD_FLINK_CHECKPOINT_MS", "2000")))
    builder = (KafkaSource.builder().set_bootstrap_servers(bootstrap).set_topics(topic).set_group_id(group)
               .set_starting_offsets(KafkaOffsetsInitializer.committed_offsets(KafkaOffsetResetStrategy.EARLIEST))
               .set_value_only_deserializer(ByteArraySchema()))
    if bounded:
        builder = builder.set_bounded(KafkaOffsetsInitializer.latest())
    else:
        builder = builder.set_property("partition.discovery.interval.ms", "10000")
    src = env.from_source(builder.build(), WatermarkStrategy.no_watermarks(), "events",
                          type_info=Types.PRIMITIVE_ARRAY(Types.BYTE()))
    fn = ApplyBatches(redis_url, s.stream_batch, s.flink_linger_ms / 1000.0)
    applied = AsyncDataStream.unordered_wait(src, fn, Time.seconds(120), capacity=max(1, s.stream_batch),
                                             output_type=Types.STRING())
    applied.print()  # nothing is emitted; a sink makes the job
    return env


class Driver:
    """The job's driver: submits it, archives the outbox, beats, and stops it on a signal."""

    def __init__(self, s: Settings, lake: Path, consumer: str | None = None):
        self.s = s
        self.r = connect(s.redis_url, socket_timeout=10.0, socket_connect_timeout=5.0)
        self.archiver = OutboxArchiver(self.r, lake, s)
        self.consumer = consumer or f"flink-{socket.gethostname()}-{os.getpid()}"
        self.started_ms = int(time.time() * 1000)
        self._last_applied = 0
        self.last_applied_ms: int | None = None

    def beat(self) -> None:
        stats = {k.decode(): int(v) for k, v in self.r.hgetall(STREAM_STATS).items()}
        applied = stats.get("applied", 0)
        if applied != self._last_applied:
            self._last_applied, self.last_applied_ms = applied, int(time.time() * 1000)
        try:
            ops.write_beat(self.r, ops.ConsumerBeat(self.consumer, os.getpid(), self.started_ms,
                                                    int(time.time() * 1000), applied, stats.get("duplicates", 0),
                                                    stats.get("archived", 0), self.last_applied_ms, None))
        except redis.RedisError as exc:
            log.warning("heartbeat failed: %s", exc)

    def run(self, bootstrap: str, topic: str, group: str, bounded: bool, parallelism: int,
            stop: threading.Event) -> dict[str, Any]:
        t0 = time.monotonic()
        self.archiver.recover()
        os.environ["PYTHONPATH"] = job_env()["PYTHONPATH"]  # the Python workers inherit it
        env = build_env(self.s, bootstrap, topic, group, bounded, parallelism, self.s.redis_url)
        client = env.execute_async("jaikod-stream")
        submitted_s = time.monotonic() - t0
        log.info(orjson.dumps({"event": "flink_job_submitted", "consumer": self.consumer,
                               "job_id": str(client.get_job_id()), "s": round(submitted_s, 1)}).decode())
        result = client.get_job_execution_result()
        status = "RUNNING"
        try:
            while not result.done():
                if stop.is_set():
                    client.cancel().result()
                    status = "CANCELED"
                    break
                self.beat()
                if self.archiver.due():
                    self.archiver.archive()
                time.sleep(0.05)
            else:
                result.result()  # raises when the job failed
                status = "FINISHED"
            self.archiver.drain()
        finally:
            try:
                ops.remove_beat(self.r, self.consumer)
            except redis.RedisError:
                pass
        stats = {k.decode(): int(v) for k, v in self.r.hgetall(STREAM_STATS).items()}
        return {"status": status, "submitted_s": round(submitted_s, 2), "wall_s": round(time.monotonic() - t0, 2),
                "applied": stats.get("applied", 0), "duplicates": stats.get("duplicates", 0),
                "archived": self.archiver.archived, "files": self.archiver.files,
                "dead_lettered": stats.get("dead_lettered", 0)}


def main(argv: list[str] | None = None) -> None:
    s = get_settings()
    ap = argparse.ArgumentParser(prog="python -m online.flink_job", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", default=s.kafka_bootstrap, help="Kafka bootstrap servers (JAIKOD_KAFKA_BOOTSTRAP)")
    ap.add_argument("--topic", default=event_topic(s.event_stream), help="events topic (as KafkaBus names it)")
    ap.add_argument("--group", default=s.event_group, help="Kafka consumer group (offsets committed on checkpoints)")
    ap.add_argument("--lake", type=Path, default=None, help="Parquet lake (default $JAIKOD_HOME/lake)")
    ap.add_argument("--parallelism", type=int, default=1)
    ap.add_argument("--bounded", action="store_true", help="stop at the topic's end offsets at start")
    ap.add_argument("--consumer", default=None, help="name in jk:ops:stream (default flink-host-pid)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=os.environ.get("JAIKOD_LOG_LEVEL", "INFO"), format="%(message)s")
    if not a.bootstrap:
        ap.error("--bootstrap (or JAIKOD_KAFKA_BOOTSTRAP) is required")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    out = Driver(s, a.lake or s.lake_dir, a.consumer).run(a.bootstrap, a.topic, a.group, a.bounded,
                                                           a.parallelism, stop)
    print(orjson.dumps({"event": "flink_job_stopped", **out}).decode(), flush=True)
    if out["status"] not in ("FINISHED", "CANCELED"):
        sys.exit(1)


if __name__ == "__main__":  # run as online.flink_job, so the workers unpickle ApplyBatches by reference
    from online.flink_job import main as _main

    _main()
