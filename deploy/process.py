"""What the engine launchers share (Kafka broker, OpenSearch node, milvus-lite server): a free loopback port,
the resident memory of a process, and one child process to ask whether it runs and to stop — SIGTERM, a
grace period, then SIGKILL — so that each launcher holds only its own command line and readiness probe."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float | None:
    """Resident memory of process ``pid`` in MiB (from /proc), None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class EngineProcess:
    """One engine's child process (``self.proc``, set by the launcher's ``start``)."""

    proc: subprocess.Popen | None = None
    grace_s = 20.0  # how long ``stop`` waits for a clean exit after SIGTERM

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_mb(self) -> float | None:
        """Resident memory of the engine process (MiB), None when it does not run."""
        return rss_mb(self.proc.pid) if self.running() else None

    def stop(self, grace_s: float | None = None) -> None:
        """SIGTERM, up to ``grace_s`` (default: the class's) for a clean exit, then SIGKILL; a process
        already gone is reaped."""
        grace_s = self.grace_s if grace_s is None else grace_s
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
