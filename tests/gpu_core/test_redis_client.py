"""The one Redis client factory: which URLs name a cluster, and what a cluster URL may not say."""

from __future__ import annotations

import pytest
import redis

from gpu_core.errors import ConfigError
from gpu_core.redis_client import cluster_url, connect, is_cluster


def test_a_plain_url_is_one_server_unless_the_setting_says_cluster():
    assert cluster_url("redis://127.0.0.1:6379/0") is None
    assert cluster_url("redis://127.0.0.1:7000/0", cluster=True) == ("redis://127.0.0.1:7000", [("127.0.0.1", 7000)])
    r = connect("redis://127.0.0.1:6379/3", cluster=False)  # no round trip: a client, not a connection
    assert isinstance(r, redis.Redis) and not is_cluster(r) and r.connection_pool.connection_kwargs["db"] == 3


def test_a_cluster_url_lists_its_startup_nodes():
    plain, nodes = cluster_url("redis+cluster://user:pw@10.0.0.1:7000,10.0.0.2:7001,10.0.0.3")
    assert plain == "redis://user:pw@10.0.0.1:7000"
    assert nodes == [("10.0.0.1", 7000), ("10.0.0.2", 7001), ("10.0.0.3", 6379)]
    assert cluster_url("rediss+cluster://h:1")[0] == "rediss://h:1"


@pytest.mark.parametrize("url", ["redis+cluster://127.0.0.1:7000/1", "redis+cluster://127.0.0.1:x"])
def test_a_cluster_url_with_a_database_or_a_bad_port_names_the_setting(url):
    with pytest.raises(ConfigError) as exc:
        cluster_url(url)
    assert exc.value.field == "redis_url"
