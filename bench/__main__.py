"""``python -m bench`` (``make bench``): every benchmark in turn; each prints a table and writes JSON
(and a PNG) under bench/results/latest/ (``make bench-publish`` copies them over the committed
bench/results/). ``python -m bench world batch`` runs a subset."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from pathlib import Path

ORDER = ("world", "batch", "etl_scale", "ltr", "online", "search", "search_backends", "feast", "scaling", "retrieval",
         "text", "vision", "stream", "bus", "flink", "boost", "vector_backends", "stack")
ROOT = Path(__file__).resolve().parents[1]


def _argv(name: str) -> list[str]:
    """The online benchmark measures the demo world of `make run` when there is one (1,000-candidate
    requests), else it builds a tiny world of its own."""
    home = Path(os.environ.get("JAIKOD_HOME", ROOT / "var"))
    if name in ("online", "feast", "scaling", "retrieval") and (home / "lake" / "features").is_dir():
        return ["--home", str(home)]
    return []


def _reset_settings() -> None:
    from gpu_core.device import reset_backend
    from gpu_core.settings import reset_settings

    reset_settings()
    reset_backend()


def main() -> int:
    wanted = sys.argv[1:] or list(ORDER)
    failed = []
    for name in wanted:
        try:
            mod = importlib.import_module(f"bench.bench_{name}")
        except ModuleNotFoundError:
            print(f"[bench] {name}: not available")
            continue
        print(f"\n[bench] {name}")
        env = dict(os.environ)  # a benchmark may point the settings at its own Redis/home: not the next one's
        try:
            mod.main(_argv(name)) if "argv" in mod.main.__code__.co_varnames else mod.main()
        except SystemExit as exc:
            if exc.code not in (0, None):
                failed.append(name)
        except Exception:
            traceback.print_exc()
            failed.append(name)
        finally:
            os.environ.clear()
            os.environ.update(env)
            _reset_settings()
    if failed:
        print(f"[bench] failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
