"""Settings for every layer: one pydantic-settings model, env prefix ``JAIKOD_``.

Every threshold of the seed lives here as a named default (Gorse style: the default is
documented beside the key). Override with environment variables, e.g. ``JAIKOD_MAX_DISTANCE_KM=300``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import orjson
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gpu_core.errors import ConfigError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JAIKOD_", extra="ignore")

    # --- where things live ---------------------------------------------------------------
    home: Path = Field(Path("var"), description="root of local state: registry, indexes, logs, lake")
    lake: Path | str | None = Field(None, description="Parquet data lake: a folder or s3://bucket/prefix; "
                                                      "default <home>/lake")
    artifacts: Path | str | None = Field(None, description=(
        "artifacts folder (index versions, model cache, trained heads): a folder or s3://bucket/prefix; default "
        "<home>/artifacts. On object storage the materialiser publishes index versions and the services the "
        "model cache there, each service downloads what it loads into <home>/artifacts/cache; heads stay local"))
    s3_endpoint_url: str | None = None  # S3-compatible endpoint of s3:// paths (None: AWS); keys from AWS_* env
    s3_region: str = "us-east-1"
    redis_url: str = "redis://127.0.0.1:6379/0"  # redis+cluster://host:port[,host:port...] = a Redis Cluster
    redis_cluster: bool = False  # the redis_url's server is one node of a Redis Cluster (gpu_core/redis_client.py)
    mlflow_uri: str | None = Field(None, description="MLflow tracking URI; default sqlite under <home>/mlflow")
    model_cache: Path | None = Field(None, description=(
        "the last production model loaded OK (checksummed copy), served when the registry is unreachable at "
        "start; default <artifacts>/model_cache (on object storage too, see artifacts)"))
    device: Literal["auto", "cpu", "gpu"] = "auto"
    scheduler: str | None = Field(None, description="dask.distributed scheduler address; None = local cluster")
    dask_workers: int = 2

    # --- retrieval and filters -----------------------------------------------------------
    n_candidates: int = 1000  # candidates scored per request (after the hard-rule filters)
    retrieval_pool_factor: float = 3.0  # retrieval asks for n_candidates x this; the filters cut survivors to n
    max_distance_km: float = 500.0  # default when the user has none
    embedding_dim: int = 64
    # exact IndexFlatIP below this many listings: recall 1.0 at ~1.5 ms for k = 3,000 over 94k x 64 (demo world);
    # IVFFlat (nlist 1225, nprobe 16) was 0.67 recall@1000 there and even nprobe 128 stays < 0.9 (bench/results)
    vector_ivf_threshold: int = 500_000
    vector_nlist: int | None = None  # IVF lists (None: 4 * sqrt(n)); only above vector_ivf_threshold
    # IVF lists probed per query, applied when the index is loaded (IVF serves above vector_ivf_threshold). 512 of
    # the 3,879 lists of the large world (940k vectors): recall@1000 0.96 at 3.8 ms; 64 gave 0.80 at 0.8 ms
    # (bench/results/retrieval_large.json, nprobe sweep); exact search there costs 20 ms
    vector_nprobe: int = 512
    search_min_hits: int = 10  # a search whose listings hold every required term finds fewer -> rarest term too
    search_tier_gap: float = 10.0  # FinalScore += relevance tier * gap (> any score spread: tiers never mix)
    # the keyword index's retrieval: the in-process BM25 index, or an OpenSearch node (query understanding and
    # the text-relevance features stay in process either way; engines/search/opensearch.py)
    keyword_backend: Literal["embedded", "opensearch"] = "embedded"
    opensearch_url: str | None = None  # e.g. http://127.0.0.1:9200 (`python -m deploy.opensearch`); for keyword_backend=opensearch
    opensearch_timeout_ms: float = 150.0  # one retrieval call; past it (or refused) -> keyword_index_down

    # --- scoring -------------------------------------------------------------------------
    w_ctr: float = 1.0  # FinalScore = pCTR*w1 + pCVR*w2 + SellerTrust*w3 + BoostMultiplier
    w_cvr: float = 2.0
    w_trust: float = 0.1
    boost_multiplier: float = 0.5  # added for listings boosted now

    # --- re-rank and polish --------------------------------------------------------------
    max_per_seller_run: int = 3  # no more than 3 items of one seller in a row
    fraud_threshold: float = 0.8  # fraud score above which a listing is demoted/dropped
    sponsored_slots: tuple[int, ...] = (4, 12)  # 1-based positions
    result_size: int = 20

    # --- latency budgets and fallbacks ---------------------------------------------------
    request_budget_ms: float = 200.0
    feature_store_timeout_ms: float = 100.0
    # reading a whole snapshot's product table (the mirror: ~60 MB at 1 M listings) off the request path
    snapshot_load_timeout_ms: float = 60_000.0

    # --- events / labels / training ------------------------------------------------------
    attribution_window_s: int = 3600  # click = 1 within 1 h
    train_days: int = 28
    holdout_hours: int = 24
    ndcg_k: int = 20
    retrain_interactions: int = 100_000
    psi_threshold: float = 0.2
    drift_reference_days: int = 7  # PSI reference: the last 7 days the model was trained/evaluated on
    drift_min_requests: int = 500  # requests after the last training before drift is computed (less is noise)
    canary_share: float = 0.05
    safety_threshold: float = 0.4

    # --- listing intake, moderation, auto-boost -------------------------------------------
    listing_text_timeout_ms: float = 300.0  # text analysis slower than this -> accept, review later in batch
    moderation_claim_timeout_s: int = 900  # a claim idle this long may be taken over by another moderator
    boost_daily_budget: float = 2000.0  # THB the auto-boost autopilot spends per day on trending slots
    boost_slot_cost: float = 20.0  # THB per boosted trending slot (one listing for one round)

    # --- service -------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1  # uvicorn worker processes
    refresh_interval_s: float = 5.0  # model alias / snapshot pointer polling
    admin_token: str | None = Field(None, description="X-Admin-Token for /v1/admin; unset = admin disabled")
    replay_sample_rate: float = 0.05  # share of responses kept in the replay log
    replay_ttl_s: int = 7 * 24 * 3600
    log_requests: bool = False  # one JSON log line per ranked request

    # --- the edge: input limits, admission control, slow vs down (issue 15) ----------------
    max_body_bytes: int = 1 << 20  # JSON request bodies larger than this -> 413 (before they are read)
    max_events_body_bytes: int = 4 << 20  # POST /v1/events (up to 5,000 events per batch)
    max_upload_body_bytes: int = 80 << 20  # image endpoints (multipart / base64): ID card + 8 selfies
    max_header_bytes: int = 8192  # all request headers together -> 431
    max_in_flight: int = 2  # ranking requests (/v1/feed, /v1/search) in flight per worker; more -> 429
    max_in_flight_other: int = 16  # other /v1 requests (events, text, listings, fraud) per worker
    max_queue_ms: float = 50.0  # a request queued behind others longer than this is shed (429)
    retry_after_s: int = 1  # Retry-After on a 429
    shed_delay_ms: float = 10.0  # an edge 429 is sent this late (a timer, no slot held): paces clients that retry at once
    shed_delay_max_ms: float = 200.0  # ... doubled per 429 a connection asks for again before Retry-After, up to this
    redis_breaker_s: float = 0.25  # after a Redis timeout/refusal, requests skip Redis this long, then one probes
    pii_key: str | None = Field(None, description="key of the PII hashes and seals at rest; unset = <home>/pii_key")
    aof_rewrite_interval_s: float = 3600.0  # BGREWRITEAOF this often (stream processor), so trimmed events leave the AOF

    # --- world -----------------------------------------------------------------------------
    world_days: int = 30

    # --- streaming, continuous training, canary, monitoring (issue 5) ----------------------
    event_stream: str = "jk:events"  # Redis stream of accepted events (the event bus)
    event_group: str = "jk-stream"  # consumer group of the stream processor
    event_bus: Literal["redis", "kafka"] = "redis"
    kafka_bootstrap: str | None = None  # e.g. "broker:9092" for event_bus=kafka
    kafka_partitions: int = 4  # partitions of the events topic when the bus creates it (= most consumers at work)
    kafka_replication_factor: int = 1  # its replication factor (3 on a real cluster)
    kafka_timeout_s: float = 5.0  # an append (all replicas) or an offset look-up slower than this fails
    # what applies the events: our processor (online/stream.py, any bus) or the PyFlink job
    # (online/flink_job.py: reads the events topic, so it needs event_bus=kafka); `jaikod stream` runs it
    stream_engine: Literal["ours", "flink"] = "ours"
    # the Flink job hands records to its Python worker and applies a micro-batch this long after the first
    # record (bench_flink: 100 ms -> freshness p99 303 ms, 1,047 events/s; 20 ms -> 91 ms, 1,298 events/s)
    flink_linger_ms: int = 20
    event_dedupe_ttl_s: int = 7 * 24 * 3600  # duplicate event ids are recognised for this long
    event_min_replicas: int = 0  # WAIT for this many replicas before acknowledging (0 = no WAIT)
    stream_batch: int = 500  # entries read per XREADGROUP
    stream_block_ms: int = 100  # XREADGROUP block (also the idle flush tick)
    stream_archive_events: int = 5000  # micro-batch size of the Parquet archive
    stream_archive_interval_s: float = 2.0  # ... or its age
    stream_claim_idle_ms: int = 30_000  # pending entries idle this long are taken over (crashed consumer)
    stream_consumer_reap_idle_s: float = 600.0  # consumers idle this long, nothing pending, leave the group
    continuous_not_worse_tolerance: float = 0.02  # a continuous retrain goes to staging at NDCG@20 >= prod * 0.98
    continuous_holdout_share: float = 0.3  # a retrain on the live day holds out its latest 30 % of requests
    canary_min_requests: int = 1000  # staging requests before an automatic decision
    canary_min_impressions: int = 200  # staging impressions before its CTR is compared
    canary_ctr_tolerance: float = 0.0  # staging CTR >= production CTR * (1 - tolerance) counts "not worse"
    canary_max_error_rate: float = 0.01
    canary_max_p99_ms: float = 200.0
    canary_interval_s: float = 10.0  # how often the service checks the canary
    alert_webhook_url: str | None = None  # Slack / PagerDuty-compatible webhook for service alerts
    alert_routing_key: str | None = None  # PagerDuty Events v2 routing key (sent in the payload)
    alert_fallback_rate: float = 0.10  # fire when the fallback rate over the window exceeds this
    alert_window_s: float = 300.0  # sliding window of the fallback-rate alert
    alert_min_requests: int = 20  # ... with at least this many requests in the window

    # --- deployment (`make run`): the scheduler's jobs and the process reports -------------------
    schedule_nightly_utc: str = "02:00"  # HH:MM UTC, daily: `jaikod batch nightly`
    schedule_continuous_s: float = 120.0  # `jaikod batch continuous` (the retrain trigger) every 2 min
    schedule_canary_s: float = 30.0  # `jaikod model canary-check` (one canary decision) every 30 s
    schedule_boost_s: float = 3600.0  # `jaikod boost run` (one autopilot round) hourly
    schedule_review_s: float = 300.0  # `jaikod batch review` (post-hoc review backlog) every 5 min
    schedule_purge_utc: str = "03:30"  # HH:MM UTC, daily: `jaikod vision-purge` (30-day eKYC retention)
    job_timeout_s: float = 3600.0  # a scheduled job running longer is killed and recorded as failed
    ready_requires_stream: bool = False  # /readyz is 503 without an attached stream processor (make run: true)
    prometheus_url: str | None = "http://127.0.0.1:9090"  # the admin console's charts query it (via the API)
    metrics_port: int | None = None  # each API worker also serves /metrics on metrics_port + worker index

    # --- the stack (issue 17): one switch picks every backend's default; an explicit setting wins -----
    stack: Literal["embedded", "full"] = "embedded"  # JAIKOD_STACK; see STACK_BACKENDS below
    vector_backend: Literal["faiss", "milvus"] = "faiss"  # full: milvus (engines/vector_milvus.py)
    milvus_uri: str | None = None  # e.g. "http://127.0.0.1:19530": a milvus-lite or Milvus server (vector_backend=milvus)
    milvus_index: Literal["FLAT", "IVF_FLAT", "HNSW"] = "FLAT"  # FLAT: exact as faiss IndexFlatIP; HNSW: Milvus server only
    milvus_timeout_ms: float = 100.0  # one vector search; slower or refused -> vector_index_down (keyword only)
    milvus_breaker_s: float = 1.0  # after a failed search, requests skip Milvus this long, then one probes

    @model_validator(mode="after")
    def _resolve_stack(self) -> Settings:
        """Backends not set explicitly take the stack's value; a chosen backend without its address is a
        one-line :class:`ConfigError` naming the address setting (fields another issue has not added yet
        are skipped, so the table can name them already)."""
        fields = type(self).model_fields
        for name, per_stack in STACK_BACKENDS.items():
            if name in fields and name not in self.model_fields_set:
                self.__dict__[name] = per_stack[self.stack]  # not marked "set": a later stack change re-resolves
        missing: dict[str, str] = {}  # address -> the first backend choice that needs it (one line each)
        for (n, v), a in BACKEND_ADDRESSES.items():
            if a in fields and getattr(self, n, None) == v and not getattr(self, a):
                missing.setdefault(a, f"{n}={v}")
        if not missing and getattr(self, "stream_engine", "ours") == "flink" and self.event_bus != "kafka":
            raise ConfigError(f"stream_engine: flink reads the events topic from Kafka, but event_bus={self.event_bus}"
                              " (set JAIKOD_EVENT_BUS=kafka or JAIKOD_STREAM_ENGINE=ours)", field="stream_engine")
        if missing:
            raise ConfigError("; ".join(f"{a}: required when {why} (stack={self.stack}), set JAIKOD_{a.upper()}"
                                        for a, why in missing.items()), field=next(iter(missing)))
        return self

    @property
    def lake_dir(self) -> Path:
        """The lake: a local :class:`Path`, or a :class:`gpu_core.lake.LakePath` for an ``s3://`` URL."""
        from gpu_core.lake import lake_path

        return lake_path(self.lake) if self.lake is not None else self.home / "lake"

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_uri:
            return self.mlflow_uri
        d = (self.home / "mlflow").resolve()
        d.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{d / 'mlflow.db'}"

    @property
    def artifacts_dir(self) -> Path:
        """The local artifacts folder (model cache, trained heads; with ``artifacts`` on object storage also
        the download cache of the index versions)."""
        from gpu_core.lake import lake_path

        if self.artifacts is not None and isinstance(local := lake_path(self.artifacts), Path):
            return local
        return self.home / "artifacts"

    @property
    def index_store(self) -> Path:
        """Where the materialiser publishes index versions (``<version>/`` folders + ``CURRENT``): under the
        artifacts folder, a local :class:`Path` or a :class:`gpu_core.lake.LakePath` on object storage."""
        from gpu_core.lake import lake_path

        return (lake_path(self.artifacts) if self.artifacts is not None else self.artifacts_dir) / "index"

    @property
    def index_cache_dir(self) -> Path:
        """Local copies of index versions fetched from an object-store :attr:`index_store`."""
        return self.artifacts_dir / "cache" / "index"

    @property
    def model_cache_fetch_dir(self) -> Path:
        """Local copies of the model cache fetched from an object-store :attr:`model_cache_dir`."""
        return self.artifacts_dir / "cache" / "model"

    @property
    def model_cache_dir(self) -> Path:
        """The model cache: ``model_cache``, else under the artifacts folder (on object storage there too)."""
        from gpu_core.lake import lake_path

        if self.model_cache is not None:
            return self.model_cache
        return (lake_path(self.artifacts) if self.artifacts is not None else self.artifacts_dir) / "model_cache"

    def digest(self) -> str:
        """Stable hash of every setting that can change a ranking (for replayable request logs): secrets
        and per-process addresses are left out, so a new admin token or port is not a "settings change"."""
        blob = orjson.dumps(self.model_dump(mode="json", exclude=set(DIGEST_EXCLUDED)), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(blob).hexdigest()[:16]


DIGEST_EXCLUDED = ("admin_token", "pii_key", "alert_webhook_url", "alert_routing_key", "host", "port", "workers",
                   "home", "lake", "artifacts", "scheduler", "redis_url", "redis_cluster", "mlflow_uri", "model_cache", "log_requests", "metrics_port",
                   "ready_requires_stream", "job_timeout_s", "prometheus_url", "schedule_nightly_utc",
                   "schedule_continuous_s", "schedule_canary_s", "schedule_boost_s", "schedule_review_s",
                   "schedule_purge_utc",
                   # the edge's limits decide whether a request is served, never its ranking
                   "max_body_bytes", "max_events_body_bytes", "max_upload_body_bytes", "max_header_bytes",
                   "max_in_flight", "max_in_flight_other", "max_queue_ms", "retry_after_s", "shed_delay_ms",
                   "shed_delay_max_ms", "redis_breaker_s",
                   "aof_rewrite_interval_s", "stream_consumer_reap_idle_s",
                   "milvus_uri", "milvus_timeout_ms", "milvus_breaker_s", "s3_endpoint_url", "s3_region")
# backend setting -> its default per stack (JAIKOD_STACK); an explicit JAIKOD_<SETTING> wins
STACK_BACKENDS: dict[str, dict[str, str]] = {
    "event_bus": {"embedded": "redis", "full": "kafka"},
    "keyword_backend": {"embedded": "embedded", "full": "opensearch"},
    "vector_backend": {"embedded": "faiss", "full": "milvus"},
    "stream_engine": {"embedded": "ours", "full": "flink"},
}
# (backend setting, value) -> the address setting that value needs
BACKEND_ADDRESSES: dict[tuple[str, str], str] = {
    ("event_bus", "kafka"): "kafka_bootstrap",
    ("keyword_backend", "opensearch"): "opensearch_url",
    ("vector_backend", "milvus"): "milvus_uri",
    ("stream_engine", "flink"): "kafka_bootstrap",
}
_current: Settings | None = None


def get_settings() -> Settings:
    """The process's settings: those given to :func:`configure`, else read once from ``JAIKOD_*``."""
    global _current
    if _current is None:
        _current = Settings()
    return _current


def configure(settings: Settings | None = None, **overrides: object) -> Settings:
    """Set the process's settings: ``settings`` as given, or the environment's with ``overrides`` on top
    (the CLI's options). Nothing is written to ``os.environ``; worker processes receive the object."""
    global _current
    clean = {k: v for k, v in overrides.items() if v is not None}
    if settings is None:
        settings = Settings(**clean)
    elif clean:
        settings = Settings(**{**settings.model_dump(exclude_unset=True), **clean})  # unset backends follow the stack
    _current = settings
    return settings


def reset_settings() -> None:
    """Forget the process's settings (tests change the environment)."""
    global _current
    _current = None
