"""Benchmark of the service under faults and overload (issue 15), not a test.

    python -m bench.bench_reliability                 # tiny world in a temp dir + a private redis
    python -m bench.bench_reliability --soak-s 600    # + the soak: mixed traffic, RSS sampled (make soak)

Measures through a real uvicorn (1 worker) on loopback:

* **overload**: closed-loop clients at 1x, 2x, 4x and 8x the rated concurrency (``max_in_flight``, the
  admission limit per worker) with admission control on, and 4x with it off (the limit raised past the
  client count): p50/p99 of the admitted (200) answers, share shed (429), 5xx. Two load generators: httpx
  (as a Python client would call the service; it costs the shared cores about 1 ms of CPU per request, so
  a client retrying at once also loads the machine the worker runs on) and a lean one (raw sockets,
  keep-alive, prebuilt requests: tens of microseconds per request), which shows what the worker itself
  does. The peers in the same run: the fixed 10 ms pause of the previous round (``shed_delay_max_ms`` =
  ``shed_delay_ms``), the h11 parser without any pause, admission off.
* **slow Redis**: Redis blocked by ``DEBUG SLEEP 0.3`` again and again (the probe's "answering in 300 ms")
  while clients request ``/v1/feed``: p99, the fallbacks named (``feature_store_slow`` vs ``redis_down``),
  5xx.
* **soak** (``--soak-s``): feed, search, events and bad input for that long; the worker's RSS sampled.

Writes bench/results/latest/reliability.json (reliability_soak.json with ``--only-soak``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench._meta import LATEST as OUT
from bench._meta import write_result
from bench.bench_online import (
    build_tiny_world,
    histogram_quantile_ms,
    pct,
    private_redis,
    route_histogram,
    uvicorn_server,
)


async def closed_loop(base: str, bodies: list[dict], conc: int, max_s: float, path: str = "/v1/feed",
                      think_on_429_s: float = 0.0) -> dict[str, Any]:
    """``conc`` clients, each sending its next request when the last is answered, for ``max_s``."""
    import httpx

    ok_lat: list[float] = []
    all_lat: list[float] = []
    codes: dict[str, int] = {}
    fallbacks: dict[str, int] = {}
    retry_after = 0
    deadline = time.perf_counter() + max_s
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    async with httpx.AsyncClient(base_url=base, timeout=10, limits=limits) as c:
        async def worker(w: int) -> None:
            nonlocal retry_after
            i = w
            while time.perf_counter() < deadline:
                i += conc
                t0 = time.perf_counter()
                try:
                    r = await c.post(path, json=bodies[i % len(bodies)])
                    code = str(r.status_code)
                except httpx.TransportError as exc:
                    code, r = type(exc).__name__, None
                ms = (time.perf_counter() - t0) * 1000
                all_lat.append(ms)
                codes[code] = codes.get(code, 0) + 1
                if r is not None and r.status_code == 200:
                    ok_lat.append(ms)
                    for f in r.json().get("fallbacks_used", []):
                        fallbacks[f] = fallbacks.get(f, 0) + 1
                elif r is not None and r.status_code == 429:
                    retry_after += "retry-after" in r.headers
                    if think_on_429_s:
                        await asyncio.sleep(think_on_429_s)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(conc)))
        wall = time.perf_counter() - t0
    n = len(all_lat)
    shed = codes.get("429", 0)
    return {"concurrency": conc, "requests": n, "rps": n / wall, "admitted": len(ok_lat),
            "admitted_p50_ms": pct(ok_lat, 50), "admitted_p99_ms": pct(ok_lat, 99), "all_p99_ms": pct(all_lat, 99),
            "shed_share": shed / n if n else 0.0, "shed_with_retry_after": retry_after,
            "server_errors": sum(v for k, v in codes.items() if k.startswith("5")), "status": codes,
            "fallbacks": fallbacks}


async def lean_loop(base: str, bodies: list[dict], conc: int, max_s: float, path: str = "/v1/feed") -> dict[str, Any]:
    """Like :func:`closed_loop` (clients retry at once), with a lean load generator: one keep-alive socket per
    client, prebuilt HTTP/1.1 requests, only the status line and ``Content-Length`` parsed."""
    host, port = base.split("//", 1)[1].rsplit(":", 1)
    reqs = []
    for b in bodies:
        body = orjson.dumps(b)
        reqs.append(b"POST %s HTTP/1.1\r\nhost: %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                    % (path.encode(), host.encode(), len(body), body))
    ok_lat: list[float] = []
    all_lat: list[float] = []
    codes: dict[str, int] = {}
    deadline = time.perf_counter() + max_s

    async def worker(w: int) -> None:
        rd, wr = await asyncio.open_connection(host, int(port))
        i = w
        try:
            while time.perf_counter() < deadline:
                i += conc
                t0 = time.perf_counter()
                wr.write(reqs[i % len(reqs)])
                head = await rd.readuntil(b"\r\n\r\n")
                length = next((int(ln.split(b":", 1)[1]) for ln in head.split(b"\r\n")
                               if ln[:15].lower() == b"content-length:"), 0)
                await rd.readexactly(length)
                ms = (time.perf_counter() - t0) * 1000
                code = head[9:12].decode()
                all_lat.append(ms)
                codes[code] = codes.get(code, 0) + 1
                if code == "200":
                    ok_lat.append(ms)
        finally:
            wr.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(conc)))
    wall = time.perf_counter() - t0
    n = len(all_lat)
    return {"concurrency": conc, "client": "lean", "requests": n, "rps": n / wall, "admitted": len(ok_lat),
            "admitted_p50_ms": pct(ok_lat, 50), "admitted_p99_ms": pct(ok_lat, 99), "all_p99_ms": pct(all_lat, 99),
            "shed_share": codes.get("429", 0) / n if n else 0.0,
            "server_errors": sum(v for k, v in codes.items() if k.startswith("5")), "status": codes}


def _feed_histogram(base: str) -> dict[float, float]:
    return route_histogram([base], "/v1/feed")


def _level(base: str, bodies: list[dict], conc: int, mult: int, max_s: float, lean: bool = False,
           **kw: Any) -> dict[str, Any]:
    """One load level; ``server_p99_ms`` from the worker's own histogram tells the worker's share of the
    admitted latency from the load generator's."""
    h0 = _feed_histogram(base)
    row = asyncio.run(lean_loop(base, bodies, conc, max_s) if lean else closed_loop(base, bodies, conc, max_s, **kw))
    h1 = _feed_histogram(base)
    return {**row, "multiple": mult, "server_p50_ms": histogram_quantile_ms(h0, h1, 0.5),
            "server_p99_ms": histogram_quantile_ms(h0, h1, 0.99)}


def overload(env: dict[str, str], bodies: list[dict], rated: int, max_s: float) -> dict[str, Any]:
    """Admission on: clients that retry at once after a 429 (httpx and lean), and clients that honour
    Retry-After (``retry_after_s`` sleep); the peers at 4x in the same run (module doc)."""
    out: dict[str, Any] = {"rated_concurrency": rated, "admission_on": [], "admission_on_retry_after": [],
                           "admission_on_lean": [], "admission_off": None}
    on = {**env, "JAIKOD_MAX_IN_FLIGHT": str(rated)}
    with uvicorn_server("online.app:create_app", on) as base:
        asyncio.run(closed_loop(base, bodies, 2, 2.0))  # warm-up
        for mult in (1, 2, 4, 8):
            out["admission_on"].append(_level(base, bodies, rated * mult, mult, max_s))
        for mult in (1, 4):
            out["admission_on_lean"].append(_level(base, bodies, rated * mult, mult, max_s, lean=True))
        for mult in (4, 8):
            out["admission_on_retry_after"].append(_level(base, bodies, rated * mult, mult, max_s, think_on_429_s=1.0))
    # before: every 429 paced by the same 10 ms, however often its connection comes back
    with uvicorn_server("online.app:create_app", {**on, "JAIKOD_SHED_DELAY_MAX_MS": on.get("JAIKOD_SHED_DELAY_MS",
                                                                                           "10")}) as base:
        asyncio.run(closed_loop(base, bodies, 2, 2.0))
        out["admission_on_fixed_delay"] = _level(base, bodies, rated * 4, 4, max_s)
        out["admission_on_fixed_delay_lean"] = _level(base, bodies, rated * 4, 4, max_s, lean=True)
    # the same 4x with clients retrying at once, on uvicorn's pure-Python HTTP parser (h11), no pause
    with uvicorn_server("online.app:create_app", {**on, "UVICORN_HTTP": "h11", "JAIKOD_SHED_DELAY_MS": "0",
                                                  "JAIKOD_SHED_DELAY_MAX_MS": "0"}) as base:
        asyncio.run(closed_loop(base, bodies, 2, 2.0))
        out["admission_on_h11_no_delay"] = _level(base, bodies, rated * 4, 4, max_s)
    with uvicorn_server("online.app:create_app", {**env, "JAIKOD_MAX_IN_FLIGHT": "10000",
                                                  "JAIKOD_MAX_QUEUE_MS": "1000000"}) as base:
        asyncio.run(closed_loop(base, bodies, 2, 2.0))
        out["admission_off"] = _level(base, bodies, rated * 4, 4, max_s)
    return out


def slow_redis(env: dict[str, str], url: str, bodies: list[dict], conc: int, max_s: float) -> dict[str, Any]:
    import redis

    stop = threading.Event()

    def sleeper() -> None:
        r = redis.Redis.from_url(url, socket_timeout=5)
        while not stop.is_set():
            r.execute_command("DEBUG", "SLEEP", "0.3")
            time.sleep(0.005)

    with uvicorn_server("online.app:create_app", env) as base:
        asyncio.run(closed_loop(base, bodies, 2, 2.0))
        healthy = asyncio.run(closed_loop(base, bodies, conc, max_s / 2))
        t = threading.Thread(target=sleeper, daemon=True)
        t.start()
        try:
            slow = asyncio.run(closed_loop(base, bodies, conc, max_s))
        finally:
            stop.set()
            t.join()
        time.sleep(1.0)
        after = asyncio.run(closed_loop(base, bodies, conc, 2.0))
    return {"redis_answers_in_ms": 300, "concurrency": conc, "healthy": healthy, "slow": slow, "after": after}


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def soak(env: dict[str, str], bodies: list[dict], seconds: float, sample_s: float = 15.0) -> dict[str, Any]:
    """Mixed traffic (feed, search, events, bad input) for ``seconds``; RSS of the worker every ``sample_s``."""
    import httpx

    samples: list[tuple[float, int]] = []
    codes: dict[str, int] = {}
    with uvicorn_server("online.app:create_app", env) as base:
        pid = _server_pid(base)
        t_end = time.monotonic() + seconds
        next_sample = time.monotonic()
        i = 0
        with httpx.Client(base_url=base, timeout=10) as c:
            while time.monotonic() < t_end:
                i += 1
                body = bodies[i % len(bodies)]
                kind = i % 10
                if kind < 6:
                    r = c.post("/v1/feed", json=body)
                elif kind < 8:
                    r = c.post("/v1/search", json={**body, "query": "phone case"})
                elif kind == 8:
                    r = c.post("/v1/events", json={"events": [{
                        "event_id": f"soak-{i}", "event_type": "impression", "ts": int(time.time() * 1000),
                        "user_id": body["user_id"], "product_id": 1 + i % 500}]})
                else:
                    r = c.post("/v1/feed", json={"user_id": "x" * (i % 300)})
                codes[str(r.status_code)] = codes.get(str(r.status_code), 0) + 1
                if time.monotonic() >= next_sample:
                    samples.append((round(seconds - (t_end - time.monotonic()), 1), rss_kb(pid)))
                    next_sample += sample_s
    rss = np.array([s[1] for s in samples], dtype=np.float64)
    half = len(rss) // 2
    return {"seconds": seconds, "requests": i, "status": codes,
            "server_errors": sum(v for k, v in codes.items() if k.startswith("5")),
            "rss_kb": samples, "rss_first_half_mean_mb": float(rss[:half].mean() / 1024) if half else None,
            "rss_second_half_mean_mb": float(rss[half:].mean() / 1024) if half else None,
            "rss_growth_mb": float((rss[-1] - rss[min(2, len(rss) - 1)]) / 1024) if len(rss) > 2 else None}


def _server_pid(base: str) -> int:
    """The uvicorn process listening on ``base``'s port (from /proc/net/tcp + fds)."""
    port = int(base.rsplit(":", 1)[1])
    inode = None
    with open("/proc/net/tcp") as fh:
        for line in fh.readlines()[1:]:
            parts = line.split()
            if int(parts[1].split(":")[1], 16) == port and parts[3] == "0A":
                inode = parts[9]
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return int(pid)
    return 0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-s", type=float, default=6.0, help="seconds per load level")
    ap.add_argument("--soak-s", type=float, default=0.0, help="soak duration (0: no soak)")
    ap.add_argument("--only-soak", action="store_true")
    ap.add_argument("--only-overload", action="store_true", help="the overload table only (no slow Redis)")
    ap.add_argument("--rated", type=int, default=None, help="admission limit to measure (default: the setting)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)

    from gpu_core.device import reset_backend
    from gpu_core.settings import reset_settings

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="jk-bench-rel-")))
        url = stack.enter_context(private_redis(tmp, "--enable-debug-command", "local"))
        os.environ.update(JAIKOD_HOME=str(tmp / "home"), JAIKOD_REDIS_URL=url)
        os.environ.setdefault("JAIKOD_DEVICE", "cpu")
        reset_settings()
        reset_backend()
        build_tiny_world(tmp / "home")
        import redis

        r = redis.Redis.from_url(url)
        version = r.get("jk:snapshot:current").decode()
        users = sorted(int(k.decode().rsplit(":", 1)[1]) for k in r.scan_iter(match=f"jk:s:{version}:u:*"))[:64]
        bodies = [{"user_id": u, "limit": 20} for u in users]
        env = {k: os.environ[k] for k in ("JAIKOD_HOME", "JAIKOD_REDIS_URL", "JAIKOD_DEVICE")}
        env["JAIKOD_REPLAY_SAMPLE_RATE"] = "0"
        from gpu_core.settings import Settings

        rated = args.rated or Settings().max_in_flight
        result: dict[str, Any] = {"machine": f"{os.cpu_count()} cores, CPU, shared with other engineers (loaded)",
                                  "world": "tiny (seed 3)", "budget_ms": Settings().request_budget_ms}
        if not args.only_soak:
            result["overload"] = overload(env, bodies, rated, args.max_s)
            if not args.only_overload:
                result["slow_redis"] = slow_redis(env, url, bodies, rated, args.max_s)
        if args.soak_s > 0:
            result["soak"] = soak(env, bodies, args.soak_s)
    name = "reliability_soak.json" if args.only_soak else "reliability.json"
    write_result(args.out / name, result, world=result["world"])
    _print(result)
    return result


def _print(result: dict[str, Any]) -> None:
    ov = result.get("overload")
    if ov:
        print(f"overload (rated concurrency {ov['rated_concurrency']} per worker, budget {result['budget_ms']} ms)")
        print(f"{'clients':>8} {'rps':>7} {'adm p50':>8} {'adm p99':>8} {'srv p99':>8} {'shed':>6} {'5xx':>4}")
        def tag(row: dict, mark: str) -> dict:
            return {**row, "concurrency": f"{row['concurrency']}{mark}"}

        rows = [*ov["admission_on"], *[tag(r, "L") for r in ov["admission_on_lean"]],
                *[tag(r, "r") for r in ov["admission_on_retry_after"]],
                tag(ov["admission_on_fixed_delay"], "f"), tag(ov["admission_on_fixed_delay_lean"], "fL"),
                tag(ov["admission_on_h11_no_delay"], "h"), tag(ov["admission_off"], "*")]
        for row in rows:
            print(f"{row['concurrency']!s:>8} {row['rps']:7.0f} {row['admitted_p50_ms']:8.1f} "
                  f"{row['admitted_p99_ms']:8.1f} {row['server_p99_ms']:8.1f} {row['shed_share']:6.1%} "
                  f"{row['server_errors']:4d}")
        print("  clients retry at once unless r; L: lean load generator (else httpx); r: clients honour Retry-After;\n"
              "  f: fixed 10 ms pause per 429 (before); h: h11 parser, no pause; *: admission control off\n"
              "  adm: as the client saw it; srv: the worker's own histogram (admitted, edge to last byte)")
    sr = result.get("slow_redis")
    if sr:
        for k in ("healthy", "slow", "after"):
            row = sr[k]
            print(f"slow redis [{k}]: p99 {row['admitted_p99_ms']:.1f} ms, 5xx {row['server_errors']}, "
                  f"fallbacks {row['fallbacks']}")
    so = result.get("soak")
    if so:
        print(f"soak {so['seconds']:.0f} s: {so['requests']} requests, 5xx {so['server_errors']}, RSS "
              f"{so['rss_first_half_mean_mb']} -> {so['rss_second_half_mean_mb']} MB (growth {so['rss_growth_mb']} MB)")


if __name__ == "__main__":
    main()
