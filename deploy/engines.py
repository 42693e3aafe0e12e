"""The seed's JVM engines as plain processes on loopback (no Docker): jars from Maven Central
(``deploy/jvm/<engine>/pom.xml``, fetched by ``scripts/jvm_engine.sh fetch <engine>`` into the ignored
``.jvm/<engine>/lib``, cached), started and stopped from Python by the test fixtures, the benchmarks and
``make run STACK=full``.

Stable API (other helpers and the supervisor rely on it; add, never rename)::

    from deploy.engines import KafkaBroker, EngineUnavailable, fetch_engine, free_port

    broker = KafkaBroker(home, port=None, controller_port=None, heap_mb=384, partitions=4,
                         extra={}, jvm_opts=())   # extra: more server.properties; jvm_opts: more JVM flags
    broker.start()            # fetch the jars (cached), format KRaft storage once, start kafka.Kafka
    broker.wait_ready(60.0)   # until the broker answers on its port (raises EngineError with the log tail)
    broker.bootstrap          # "127.0.0.1:<port>"  (JAIKOD_KAFKA_BOOTSTRAP)
    broker.rss_mb()           # resident memory of the broker's JVM now, MiB (None when not running)
    broker.started_s          # seconds from start() to ready, once wait_ready() returned
    broker.stop()             # SIGTERM, then SIGKILL after a grace period; data stays under home
    with KafkaBroker(home) as b: ...   # start + wait_ready, stop on exit

    fetch_engine("kafka") -> Path     # the lib dir of the jars; EngineUnavailable(reason) when java/mvn
                                      # is missing or Maven cannot fetch them (callers skip on it)

``home`` holds ``server.properties``, ``log4j2.properties``, ``data/`` (the KRaft log dirs, formatted once
with a random cluster id; a restart on the same home keeps topics and offsets) and ``logs/server.log``.
The broker is a single KRaft node (``process.roles=broker,controller``) with replication factors 1,
a small heap, ``group.initial.rebalance.delay.ms=0`` and ``group.min.session.timeout.ms=1000`` (so a
consumer's session timeout can be short in tests), topics auto-created with ``partitions`` partitions.

Imports nothing of the project but :mod:`gpu_core` (nothing at all today).
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from deploy.process import EngineProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
JVM_SCRIPT = ROOT / "scripts" / "jvm_engine.sh"


class EngineError(RuntimeError):
    """An engine was fetched but did not start or answer (a bug or a broken machine, not a skip)."""


class EngineUnavailable(EngineError):
    """The engine cannot be had here: java or mvn missing, or Maven Central did not serve the jars."""


def fetch_engine(engine: str, timeout_s: float = 600.0) -> Path:
    """The directory of ``engine``'s runtime jars, fetched from Maven Central on first use (cached)."""
    for tool in ("java", "mvn", "bash"):
        if shutil.which(tool) is None:
            raise EngineUnavailable(f"{tool} is not installed (needed to run {engine})")
    try:
        out = subprocess.run(["bash", str(JVM_SCRIPT), "fetch", engine], capture_output=True, text=True,
                             timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise EngineUnavailable(f"fetching {engine}'s jars took over {timeout_s:.0f} s") from exc
    if out.returncode in (3, 4):
        raise EngineUnavailable(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "fetch failed")
    if out.returncode != 0:
        raise EngineError(f"scripts/jvm_engine.sh fetch {engine} exited {out.returncode}: {out.stderr[-2000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


def cluster_id() -> str:
    """A new KRaft cluster id, as ``kafka-storage random-uuid`` makes it (URL-safe base64 of a random UUID,
    no padding, never starting with '-'), without starting a JVM for it."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = {level}
logger.apache.name = org.apache.kafka
logger.apache.level = {level}
"""


class KafkaBroker(EngineProcess):
    """One KRaft Kafka node (broker + controller) on loopback; see the module docstring for the API."""

    main_class = "kafka.Kafka"
    ready_line = "Kafka Server started"

    def __init__(self, home: Path | str, port: int | None = None, controller_port: int | None = None,
                 heap_mb: int = 384, partitions: int = 4, log_level: str = "INFO",
                 extra: dict[str, str] | None = None, jvm_opts: tuple[str, ...] = ()):
        self.home = Path(home)
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self.heap_mb = heap_mb
        self.partitions = partitions
        self.log_level = log_level
        self.extra = dict(extra or {})  # more server.properties keys (win over ours)
        self.jvm_opts = tuple(jvm_opts)  # more JVM options of the broker (e.g. -XX:TieredStopAtLevel=1)
        self.proc: subprocess.Popen | None = None
        self.started_s: float | None = None
        self._t0 = 0.0
        self._out = None

    # ---- paths and configuration ---------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.home / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_path(self) -> Path:
        return self.home / "logs" / "server.log"

    def properties(self) -> dict[str, str]:
        p = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": str(self.partitions),
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",  # 50 by default: slow first group join on 2 cores
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "min.insync.replicas": "1",
            "group.initial.rebalance.delay.ms": "0",
            "group.min.session.timeout.ms": "1000",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "log.retention.hours": "168",
        }
        p.update(self.extra)
        return p

    def write_config(self) -> None:
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        self.config_path.write_text("".join(f"{k}={v}\n" for k, v in self.properties().items()))
        (self.home / "log4j2.properties").write_text(_LOG4J2.format(log=self.log_path, level=self.log_level))

    def _java(self, lib: Path, main: str, *args: str, heap_mb: int | None = None, quick: bool = False) -> list[str]:
        java = os.environ.get("JAVA_HOME")
        binary = str(Path(java) / "bin" / "java") if java else "java"
        return [binary, f"-Xmx{heap_mb or self.heap_mb}m", f"-Xms{min(64, heap_mb or self.heap_mb)}m",
                "-XX:+UseSerialGC", "-Djava.awt.headless=true",
                *(["-XX:TieredStopAtLevel=1"] if quick else []),  # a one-shot tool: start fast, no C2
                f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
                "-cp", f"{lib}/*", main, *args]

    def format_storage(self, lib: Path) -> None:
        """``kafka-storage format --standalone`` once per home (a formatted data dir is kept)."""
        if (self.data_dir / "meta.properties").exists():
            return
        out = subprocess.run(self._java(lib, "kafka.tools.StorageTool", "format", "--standalone", "-g",
                                        "-t", cluster_id(), "-c", str(self.config_path), heap_mb=128, quick=True),
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise EngineError(f"kafka StorageTool format failed: {out.stdout[-1000:]} {out.stderr[-2000:]}")

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> KafkaBroker:
        """Fetch (cached), format once, start the broker process; returns at once (see wait_ready)."""
        if self.running():
            return self
        self._t0 = time.monotonic()
        self.started_s = None
        lib = fetch_engine("kafka")
        self.write_config()
        self.format_storage(lib)
        self._out = open(self.home / "logs" / "stdout.log", "ab")  # noqa: SIM115 - closed in stop()
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        cmd = self._java(lib, self.main_class, str(self.config_path))
        cmd[1:1] = self.jvm_opts
        self.proc = subprocess.Popen(cmd,
                                     stdout=self._out, stderr=subprocess.STDOUT, cwd=self.home,
                                     start_new_session=True)
        return self

    def _log_tail(self, n: int = 3000) -> str:
        parts = []
        for p in (self.log_path, self.home / "logs" / "stdout.log"):
            if p.exists():
                parts.append(f"--- {p.name}\n{p.read_text(errors='replace')[-n:]}")
        return "\n".join(parts)

    def _ready(self) -> bool:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(self._log_offset)
                if self.ready_line.encode() not in fh.read():
                    return False
        except OSError:
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                return True
        except OSError:
            return False

    def wait_ready(self, timeout_s: float = 90.0) -> KafkaBroker:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.proc is None or self.proc.poll() is not None:
                raise EngineError(f"kafka broker exited ({self.proc and self.proc.returncode}):\n{self._log_tail()}")
            if self._ready():
                self.started_s = time.monotonic() - self._t0
                return self
            time.sleep(0.1)
        raise EngineError(f"kafka broker not ready after {timeout_s:.0f} s:\n{self._log_tail()}")

    def stop(self, grace_s: float | None = None) -> None:
        super().stop(grace_s)
        if self._out is not None:
            self._out.close()
            self._out = None

    def __enter__(self) -> KafkaBroker:
        return self.start().wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """``python -m deploy.engines kafka --home DIR --port N``: run a broker in the foreground (make run)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m deploy.engines", description=main.__doc__)
    ap.add_argument("engine", choices=["kafka"])
    ap.add_argument("--home", type=Path, required=True, help="config, KRaft data and logs")
    ap.add_argument("--port", type=int, default=9092)
    ap.add_argument("--controller-port", type=int, default=9093)
    ap.add_argument("--heap-mb", type=int, default=384)
    ap.add_argument("--partitions", type=int, default=4)
    a = ap.parse_args(argv)
    broker = KafkaBroker(a.home, a.port, a.controller_port, a.heap_mb, a.partitions)
    stop = {"now": False}

    def _stop(*_: object) -> None:
        stop["now"] = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    broker.start().wait_ready()
    print(f"kafka: ready on {broker.bootstrap} in {broker.started_s:.1f} s (home {a.home})", flush=True)
    try:
        while not stop["now"] and broker.running():
            time.sleep(0.5)
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
