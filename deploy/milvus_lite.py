"""milvus-lite as a plain process on loopback: the vector database of ``JAIKOD_STACK=full``.

    python -m deploy.milvus_lite --data-dir var/milvus --port 19530   # then JAIKOD_MILVUS_URI=http://127.0.0.1:19530

The PyPI wheel ``milvus-lite`` 2.5 ships Milvus's C++ core as one binary (``milvus_lite/lib/milvus``); its
Python wrapper starts it on a unix socket inside the client process and needs ``pkg_resources``
(setuptools < 81). Here the binary is started directly, listening on TCP, so every API worker, the
materialiser and the benchmark share one server, and stopping it is a real "vector DB down". It is not
the distributed Milvus server (see :mod:`engines.vector_milvus`). One process holds the data file; a
second one on the same ``--data-dir`` fails to start.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from deploy.process import EngineProcess, free_port

DB_FILE = "milvus.db"


def binary() -> Path:
    """The milvus-lite server binary (found without importing the package's wrapper)."""
    spec = importlib.util.find_spec("milvus_lite")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("milvus-lite is not installed (pip install 'milvus-lite>=2.5.1,<2.6')")
    path = Path(spec.submodule_search_locations[0]) / "lib" / "milvus"
    if not path.exists():
        raise FileNotFoundError(f"milvus-lite binary missing: {path}")
    return path


class MilvusLiteServer(EngineProcess):
    """One milvus-lite process on ``127.0.0.1:port`` over ``data_dir/milvus.db``."""

    grace_s = 10.0

    def __init__(self, data_dir: Path, port: int | None = None, log_level: str = "ERROR"):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.log_level = log_level
        self.proc: subprocess.Popen | None = None
        self.start_s: float | None = None  # seconds from spawn to the first answered call

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> MilvusLiteServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        exe = binary()
        env = {**os.environ, "LD_LIBRARY_PATH": f"{exe.parent}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([str(exe), str(self.data_dir / DB_FILE), f"127.0.0.1:{self.port}", self.log_level],
                                     env=env, cwd=str(self.data_dir), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.wait_ready(timeout_s)
        self.start_s = time.perf_counter() - t0
        return self

    def wait_ready(self, timeout_s: float) -> None:
        from pymilvus import (
            MilvusClient,  # deploy/ imports no project code but gpu_core (tests/test_layers.py)
        )

        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"milvus-lite exited with {self.proc.returncode} (is {self.data_dir} in use?)")
            try:
                client = MilvusClient(uri=self.uri, timeout=1.0)
                client.list_collections()
                client.close()
                return
            except Exception:  # not listening yet
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"milvus-lite did not answer on {self.uri} within {timeout_s:g} s") from None
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: the vector database is gone, as after a crash."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deploy.milvus_lite", description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=Path("var/milvus"))
    ap.add_argument("--port", type=int, default=19530)
    ap.add_argument("--log-level", default="ERROR")
    a = ap.parse_args(argv)
    server = MilvusLiteServer(a.data_dir, a.port, a.log_level).start()
    print(f"milvus-lite on {server.uri} (data {a.data_dir / DB_FILE}, up in {server.start_s:.2f} s)", flush=True)
    # the supervisor's stop reaches the binary, killed if it outlasts 3 s (honcho's grace is 5 s)
    signal.signal(signal.SIGTERM, lambda *_: (server.stop(3.0), sys.exit(0)))
    try:
        return server.proc.wait()
    except KeyboardInterrupt:
        server.stop(3.0)
        return 0


if __name__ == "__main__":
    sys.exit(main())
