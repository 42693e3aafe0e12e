"""Fixtures of the reliability suite: a real uvicorn (``--factory online.app:create_app``) on loopback over
the tiny world's real Redis, with the admin token set. Faults are caused for real (the Redis server is
stopped, slowed with ``DEBUG SLEEP``, processes are killed); every request loop is bounded."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ADMIN_TOKEN = "reliability-admin-token"
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """One uvicorn process; ``base`` is its loopback URL, ``log`` its stderr file."""

    def __init__(self, env: dict[str, str], log: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._fh = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "online.app:create_app", "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "warning"],
            env=env, cwd=ROOT, stdout=self._fh, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 300.0, status: int = 200) -> None:  # a bound, for loaded machines
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"uvicorn exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2.0).status_code == status:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"uvicorn never answered /readyz {status}: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._fh.close()


def server_env(world, **settings: object) -> dict[str, str]:
    env = {**os.environ, "JAIKOD_HOME": str(world.home), "JAIKOD_REDIS_URL": world.redis_url,
           "JAIKOD_DEVICE": os.environ.get("JAIKOD_DEVICE", "cpu"), "JAIKOD_ADMIN_TOKEN": ADMIN_TOKEN,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    env.update({f"JAIKOD_{k.upper()}": str(v) for k, v in settings.items()})
    return env


@pytest.fixture(scope="module")
def live(tiny_world, redis_server, tmp_path_factory):
    """A uvicorn serving the tiny world with the admin token (module-scoped: one start per test file)."""
    tiny_world.ensure_redis(redis_server)
    server = LiveServer(server_env(tiny_world), tmp_path_factory.mktemp("live") / "uvicorn.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
        tiny_world.restore(redis_server)


@pytest.fixture(scope="module")
def world_users(tiny_world) -> list[int]:
    """User ids of the live snapshot."""
    import redis

    r = redis.Redis.from_url(tiny_world.redis_url)
    version = r.get("jk:snapshot:current").decode()
    return sorted(int(k.decode().rsplit(":", 1)[1]) for k in r.scan_iter(match=f"jk:s:{version}:u:*", count=1000))[:8]
