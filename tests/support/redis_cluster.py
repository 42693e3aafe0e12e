"""A real Redis Cluster on loopback for the tests: ``redis-server --cluster-enabled yes`` processes on free
ports, joined by ``redis-cli --cluster create`` (3 masters, and one replica each when asked)."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _free_ports(n: int) -> list[int]:
    """``n`` free loopback ports whose cluster bus ports (port + 10000) are free too (a node's port must be
    at most 55535)."""
    rng = random.Random()
    out: list[int] = []
    while len(out) < n:
        port = rng.randrange(20_000, 45_000)
        if port not in out and port + 10_000 not in out and _bindable(port) and _bindable(port + 10_000):
            out.append(port)
    return out


class RedisClusterServers:
    """``masters`` masters (+ ``replicas`` per master) of one cluster; ``url`` is its ``redis+cluster://`` URL."""

    def __init__(self, tmp: Path, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 1000):
        self.binary, self.cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if not self.binary or not self.cli:
            pytest.skip("redis-server / redis-cli not installed (scripts/ensure_redis.sh installs them)")
        self.tmp, self.node_timeout_ms = tmp, node_timeout_ms
        self.ports = _free_ports(masters * (1 + replicas))
        self.procs: dict[int, subprocess.Popen] = {}
        for port in self.ports:
            self.start_node(port)
        subprocess.run([self.cli, "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                        "--cluster-replicas", str(replicas), "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:masters])
        self.wait_ok(masters * (1 + replicas))

    def start_node(self, port: int) -> None:
        d = self.tmp / str(port)
        d.mkdir(exist_ok=True)
        self.procs[port] = subprocess.Popen(
            [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d), "--save", "",
             "--appendonly", "no", "--logfile", str(d / "redis.log"), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", str(self.node_timeout_ms), "--enable-debug-command", "local",
             # a replica may take over however long its link was down (the test kills masters on purpose)
             "--cluster-replica-validity-factor", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        node = self.node(port)
        for _ in range(500):
            if self.procs[port].poll() is not None:
                break
            try:
                node.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.02)
        log = (d / "redis.log").read_text(errors="replace")[-2000:] if (d / "redis.log").exists() else ""
        raise RuntimeError(f"cluster node {port} did not start: {log}")

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2,
                           retry=Retry(NoBackoff(), 0))

    def live_ports(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def masters(self) -> list[int]:
        """Ports of the masters that serve slots now (as a live node sees them)."""
        nodes = self.node(self.live_ports()[0]).execute_command("CLUSTER", "NODES").decode().splitlines()
        return sorted(int(f[1].split(":")[1].split("@")[0]) for f in (ln.split() for ln in nodes)
                      if "master" in f[2] and "fail" not in f[2] and len(f) > 8)

    def wait_ok(self, n_nodes: int | None = None, timeout_s: float = 30.0) -> None:
        """Until every live node says ``cluster_state:ok`` (and knows ``n_nodes`` nodes) and every replica's link is up."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                infos = [self.node(p).cluster("info") for p in self.live_ports()]
                links = [self.node(p).info("replication") for p in self.live_ports()]
                if all(i["cluster_state"] == "ok" and (n_nodes is None or int(i["cluster_known_nodes"]) >= n_nodes)
                       for i in infos) and all(x.get("master_link_status", "up") == "up" for x in links):
                    return
            except redis.RedisError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")

    def kill(self, port: int) -> None:
        proc = self.procs[port]
        proc.kill()
        proc.wait(timeout=10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
