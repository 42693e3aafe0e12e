"""The engines a stack's settings need, and a wait until they answer (``jaikod stack wait|prepare``).

``JAIKOD_STACK=full`` puts the event bus on Kafka, keyword retrieval on OpenSearch and the vector index on
Milvus (``gpu_core.settings.STACK_BACKENDS``); under ``make run STACK=full`` the supervisor (honcho,
``Procfile.full``) starts the three engines beside the service's processes, which first wait here::

    needed(settings)            # [Engine("kafka", "127.0.0.1:9092"), Engine("opensearch", ...), ...]
    wait(needed(settings), 240) # {"kafka": 1.2, ...}: seconds until each answered; EngineDown otherwise

An explicit backend setting counts, whatever the stack: ``JAIKOD_VECTOR_BACKEND=milvus`` alone needs
Milvus only. Probes are the engines' own clients (confluent-kafka's metadata call, OpenSearch's root
document over HTTP, pymilvus' ``list_collections``), each bounded by one second.

Imports nothing of the project but :mod:`gpu_core`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gpu_core.errors import JaikodError


class EngineDown(JaikodError):
    """An engine the settings name did not answer within the wait."""

    http_status = 503


@dataclass(frozen=True)
class Engine:
    name: str  # kafka | opensearch | milvus
    address: str  # the setting's value: bootstrap servers, or the node's / server's URL
    setting: str  # the address setting (JAIKOD_<SETTING>)


def needed(settings) -> list[Engine]:
    """The engines the settings' backends use, in start-up order of their users."""
    out = []
    if settings.event_bus == "kafka" or getattr(settings, "stream_engine", "ours") == "flink":
        out.append(Engine("kafka", settings.kafka_bootstrap, "kafka_bootstrap"))
    if settings.keyword_backend == "opensearch":
        out.append(Engine("opensearch", settings.opensearch_url, "opensearch_url"))
    if settings.vector_backend == "milvus":
        out.append(Engine("milvus", settings.milvus_uri, "milvus_uri"))
    return out


def _kafka(address: str) -> None:
    from confluent_kafka.admin import AdminClient

    AdminClient({"bootstrap.servers": address, "logger": _QUIET}).list_topics(timeout=1.0)


def _opensearch(address: str) -> None:
    import httpx

    r = httpx.get(address.rstrip("/") + "/", timeout=1.0)
    r.raise_for_status()


def _milvus(address: str) -> None:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=address, timeout=1.0)
    try:
        client.list_collections()
    finally:
        client.close()


class _Quiet:
    """A logger for librdkafka that drops its connection-refused lines while an engine is starting."""

    def log(self, *args: object, **kwargs: object) -> None:
        return None

    debug = info = warning = error = critical = exception = log


_QUIET = _Quiet()
PROBES: dict[str, Callable[[str], None]] = {"kafka": _kafka, "opensearch": _opensearch, "milvus": _milvus}


def probe(engine: Engine) -> str | None:
    """None when the engine answers now, else why not (one line)."""
    try:
        PROBES[engine.name](engine.address)
        return None
    except Exception as exc:  # noqa: BLE001 - any failure of the engine's client means "not answering yet"
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


def wait(engines: Sequence[Engine], timeout_s: float = 240.0, interval_s: float = 0.5,
         on_ready: Callable[[Engine, float], None] | None = None) -> dict[str, float]:
    """Block until every engine answers; {name: seconds waited}. :class:`EngineDown` names the ones that
    did not within ``timeout_s`` (with the last reason each gave)."""
    t0 = time.monotonic()
    left = list(engines)
    ready: dict[str, float] = {}
    why: dict[str, str] = {}
    while True:
        for e in list(left):
            reason = probe(e)
            if reason is None:
                ready[e.name] = time.monotonic() - t0
                left.remove(e)
                if on_ready is not None:
                    on_ready(e, ready[e.name])
            else:
                why[e.name] = reason
        if not left:
            return ready
        if time.monotonic() - t0 >= timeout_s:
            raise EngineDown("; ".join(f"{e.name} at {e.address} ({e.setting}) did not answer within "
                                       f"{timeout_s:g} s: {why[e.name]}" for e in left), field=left[0].setting)
        time.sleep(interval_s)
