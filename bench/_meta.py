"""What every benchmark result says about where it was measured (issue 16, hygiene).

    >>> write_result(LATEST / "online.json", result, world="demo (seed 7, 100k listings)")

``make bench`` writes under ``bench/results/latest/`` (ignored by git); only ``make bench-publish``
(:func:`publish`) copies those files over the committed ``bench/results/*``. Every JSON carries a
``stamp``: the machine (cores, CPU model, memory, device, GPU state, package versions), the world it
ran on and the commit (with a ``dirty`` flag when the tree had uncommitted changes).
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"  # committed (the README's table and plots come from here)
LATEST = RESULTS / "latest"  # what `make bench` writes
PACKAGES = ("numpy", "xgboost", "faiss-cpu", "redis", "fastapi", "uvicorn", "dask", "distributed", "pandas",
            "pyarrow", "orjson", "onnxruntime")
GPU_NOT_MEASURED = "GPU: not measured (no GPU machine for this run)"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _redis_server() -> str | None:
    exe = shutil.which("redis-server")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return next((w.split("=", 1)[1] for w in out.split() if w.startswith("v=")), out.strip() or None)


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def commit() -> dict[str, Any]:
    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        return {"hash": git("rev-parse", "HEAD") or None, "branch": git("rev-parse", "--abbrev-ref", "HEAD") or None,
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"hash": None, "branch": None, "dirty": None}


def machine() -> dict[str, Any]:
    device = os.environ.get("JAIKOD_DEVICE", "auto")
    try:
        from gpu_core.device import backend

        device = backend().name
    except Exception:  # a stamp never fails a benchmark
        pass
    return {"cores": os.cpu_count(), "cpu": _cpu_model(), "memory_gib": _mem_gib(), "device": device,
            "gpu": GPU_NOT_MEASURED if device != "gpu" else "measured", "python": sys.version.split()[0],
            "platform": platform.platform(), "redis_server": _redis_server(),
            "versions": {p: v for p in PACKAGES if (v := _version(p))},
            "note": "shared with other engineers (loaded); compare ratios measured in the same run"}


def stamp(world: Any) -> dict[str, Any]:
    return {"machine": machine(), "world": world, "commit": commit(),
            "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}


def write_result(path: Path, result: dict[str, Any], *, world: Any) -> Path:
    """``result`` + its ``stamp`` as JSON at ``path`` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    out = {"stamp": stamp(world), **{k: v for k, v in result.items() if k != "stamp"}}
    path.write_text(json.dumps(out, indent=2, default=str, ensure_ascii=False) + "\n")
    return path


def tree_rss_mb(pid: int) -> float | None:
    """Resident memory (MiB) of a process and all its descendants now; None once the process is gone (a
    child exiting mid-count is skipped)."""
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return None
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return round(total / 2**20, 1)


def print_rows(rows: list[dict[str, Any]]) -> None:
    """A list of same-keyed dicts as a plain ``a | b | c`` table (header first)."""
    if not rows:
        return
    cols = list(rows[0])
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r[c]) for c in cols))


def publish(src: Path = LATEST, dst: Path = RESULTS) -> list[Path]:
    """``make bench-publish``: replace the committed results with the latest run's files."""
    done = []
    for f in sorted(src.glob("*")):
        if f.is_file() and f.suffix in (".json", ".png"):
            shutil.copy2(f, dst / f.name)
            done.append(dst / f.name)
    return done


if __name__ == "__main__":  # python -m bench._meta publish
    if sys.argv[1:] == ["publish"]:
        files = publish()
        print("\n".join(f"published {p.relative_to(ROOT)}" for p in files) or f"nothing under {LATEST}")
        sys.exit(0 if files else 1)
    print(json.dumps(stamp(None), indent=2))
