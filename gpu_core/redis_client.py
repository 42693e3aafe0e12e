"""The one Redis client factory: a single server (default) or a Redis Cluster, from one URL.

``redis://host:port/db`` is one server (:class:`redis.Redis`). ``redis+cluster://host:port[,host:port...]``
(or any ``redis://`` URL with ``settings.redis_cluster``) is a Redis Cluster: :class:`ClusterClient`, redis-py's
:class:`redis.cluster.RedisCluster` (slot map, MOVED/ASK, failover rediscovery) with the few calls the
project makes across slots made slot-aware, so the code above it is the same for both:

- ``mget`` / ``mset`` over keys of many slots are split by slot and sent as one pipeline per node
  (``mget_nonatomic`` / ``mset_nonatomic``): a feed request's product reads stay one round trip per node;
- pipelines group their commands by node (one round trip per node); a ``transaction=True`` pipeline (MULTI)
  needs all its keys in one slot, which the contracts guarantee with hash tags (``{...}`` in a key name:
  only the part in braces picks the slot; on a single server a tag is just part of the name);
- Lua scripts likewise touch one slot each (the feature store's event update is split into a product half
  and a user half, each idempotent on its own); :func:`load_scripts` puts them on every master (a replica
  promoted by a failover starts with an empty script cache).

    >>> r = connect("redis+cluster://127.0.0.1:7000,127.0.0.1:7001", socket_timeout=0.1)
    >>> is_cluster(r)
    True
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.exceptions import ClusterDownError, RedisClusterException, TryAgainError

from gpu_core.errors import ConfigError

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


class ClusterClient(RedisCluster):
    """:class:`RedisCluster` whose ``mget``/``mset`` accept keys of any slots (split per slot, one pipeline
    per node; atomic per slot only, as each caller of these already assumes nothing more)."""

    def mget(self, keys: Any, *args: Any) -> list[Any]:  # type: ignore[override]
        return self.mget_nonatomic(keys, *args)

    def mset(self, mapping: Any) -> bool:  # type: ignore[override]
        return all(self.mset_nonatomic(mapping))


def cluster_url(url: str, cluster: bool = False) -> tuple[str, list[tuple[str, int]]] | None:
    """(plain URL for redis-py, startup nodes) when ``url`` names a cluster, else None. ConfigError for a
    cluster URL with a database other than 0 (a cluster has only db 0)."""
    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES.get(parts.scheme)
    if scheme is None and not cluster:
        return None
    scheme = scheme or parts.scheme
    auth, _, hosts = parts.netloc.rpartition("@")
    nodes = []
    for hp in hosts.split(","):
        host, _, port = hp.rpartition(":") if ":" in hp else (hp, "", "6379")
        try:
            nodes.append((host or "127.0.0.1", int(port)))
        except ValueError:
            raise ConfigError(f"redis_url: bad cluster node {hp!r}", field="redis_url") from None
    if parts.path.strip("/") not in ("", "0"):
        raise ConfigError(f"redis_url: a Redis Cluster has only database 0, not {parts.path!r}", field="redis_url")
    first = f"{auth}@{hosts.split(',')[0]}" if auth else hosts.split(",")[0]
    return urlunsplit((scheme, first, "", parts.query, "")), nodes


def connect(url: str | None = None, *, cluster: bool | None = None, **kwargs: Any) -> redis.Redis | ClusterClient:
    """A client for ``url`` (default ``settings.redis_url``; ``cluster`` default ``settings.redis_cluster``).
    ``kwargs`` are redis-py's connection options (``socket_timeout``, ``retry``, ...)."""
    if url is None or cluster is None:
        from gpu_core.settings import get_settings

        s = get_settings()
        url = s.redis_url if url is None else url
        cluster = s.redis_cluster if cluster is None else cluster
    found = cluster_url(url, cluster)
    if found is None:
        return redis.Redis.from_url(url, **kwargs)
    plain, nodes = found
    kwargs.pop("db", None)
    return ClusterClient.from_url(plain, startup_nodes=[ClusterNode(h, p) for h, p in nodes[1:]], **kwargs)


def is_cluster(r: Any) -> bool:
    """Is ``r`` (a client or a pipeline) talking to a Redis Cluster?"""
    return isinstance(r, RedisCluster)


def load_scripts(r: Any, scripts: Iterable[Any], *, strict: bool = False) -> None:
    """``SCRIPT LOAD`` each :class:`redis.commands.core.Script` on every master of a cluster (a plain
    server's pipelines load their scripts themselves). A node down is no failure unless ``strict`` (a
    pipeline that finds a script missing loads them again: :func:`has_noscript`)."""
    if not is_cluster(r):
        return
    try:
        for script in scripts:
            r.script_load(script.script)
    except (redis.RedisError, RedisClusterException):
        if strict:
            raise


TRANSIENT = (redis.ConnectionError, redis.TimeoutError, ClusterDownError, TryAgainError,
             redis.exceptions.NoScriptError)


def raise_transient(results: Iterable[Any]) -> None:
    """Raise the first error in a pipeline's results (``raise_on_error=False``) that says the cluster was
    not there (a node down, a failover in progress, a script not yet loaded) rather than that the command
    was refused: the caller retries the whole batch later instead of blaming its entries."""
    for x in results:
        if isinstance(x, TRANSIENT):
            raise x


def has_noscript(results: Iterable[Any]) -> bool:
    """Did a cluster pipeline's script call find its script missing (a master new since it was loaded)?"""
    return any(isinstance(x, redis.exceptions.NoScriptError) for x in results)


def run_script(script: Any, keys: list[Any], args: list[Any], client: Any) -> Any:
    """Call a registered script on ``client`` (a client or a pipeline). redis-py's cluster pipelines refuse
    ``Script.__call__`` (their ``evalsha`` is blocked over NOSCRIPT handling); there the ``EVALSHA`` is queued
    as a plain command and the caller handles a missing script (:func:`load_scripts`, :func:`has_noscript`)."""
    if is_cluster(client) and isinstance(client, ClusterPipeline):
        return client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
    return script(keys=keys, args=args, client=client)


def wait_replicas(r: Any, key: str, replicas: int, timeout_ms: int) -> int:
    """``WAIT`` on the server that holds ``key`` (on a cluster, the master of its slot): how many replicas
    acknowledged this connection's writes so far."""
    if is_cluster(r):
        return int(r.execute_command("WAIT", replicas, timeout_ms, target_nodes=r.get_node_from_key(key)))
    return int(r.execute_command("WAIT", replicas, timeout_ms))
