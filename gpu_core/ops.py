"""Contract of the long-running processes of a deployment (``make run``): what the stream processors and
the scheduler report about themselves, and what ``/readyz`` and ``GET /v1/admin/status`` read back.

======================================  ========================================================
``jk:ops:stream``                       hash: consumer name -> JSON :class:`ConsumerBeat`
``jk:ops:scheduler``                    hash: pid, host, started_ms, at_ms (the scheduler's heartbeat)
``jk:ops:jobs``                         hash: job name -> JSON :class:`JobRecord`
======================================  ========================================================

Times are epoch milliseconds. A process counts as *attached* when its heartbeat is younger than
``stale_ms`` (default :data:`STALE_MS`); a stopped process removes its own entry.

**Resident jobs.** A frequent, light job (the canary check, every 30 s) would spend most of each run
starting Python and importing MLflow (measured 4.7-5.2 s CPU per run, of a few ms of work). The scheduler
keeps such a job's ``jaikod`` process up instead: it writes one line (:data:`RESIDENT_RUN`) to the child's
stdin per run; the child (:func:`resident_loop`) runs once, prints its output and then
``@@end <code>`` (:data:`RESIDENT_END`), and exits when stdin closes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

STREAM_CONSUMERS = "jk:ops:stream"
SCHEDULER = "jk:ops:scheduler"
JOBS = "jk:ops:jobs"
STALE_MS = 10_000  # a heartbeat older than this: the process is gone (it beats every second)
RESIDENT_RUN = "run"  # scheduler -> resident job: one run now
RESIDENT_END = "@@end "  # resident job -> scheduler: the run ended, with its exit code


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class ConsumerBeat:
    """One stream processor: its counters and when it last applied an event."""

    consumer: str
    pid: int
    started_ms: int
    at_ms: int  # heartbeat
    applied: int = 0  # events newly applied by this process
    duplicates: int = 0
    archived: int = 0
    last_applied_ms: int | None = None  # wall time of the last applied event
    last_event_ts_ms: int | None = None  # the event time (``ts``) of that event

    def attached(self, now_ms: int | None = None, stale_ms: int = STALE_MS) -> bool:
        return (now_ms or _now_ms()) - self.at_ms <= stale_ms


@dataclass
class JobRecord:
    """One scheduled job: its schedule, last run and next run."""

    name: str
    schedule: str  # human-readable ("every 120 s", "cron 02:00 UTC")
    command: list[str] = field(default_factory=list)
    next_run_ms: int | None = None
    last_start_ms: int | None = None
    last_end_ms: int | None = None
    last_result: str | None = None  # "ok" | "failed (exit N)" | "running"
    last_message: str | None = None  # last line of the job's output
    runs: int = 0
    failures: int = 0


def write_beat(r: Any, beat: ConsumerBeat) -> None:
    r.hset(STREAM_CONSUMERS, beat.consumer, orjson.dumps(asdict(beat)))


def remove_beat(r: Any, consumer: str) -> None:
    r.hdel(STREAM_CONSUMERS, consumer)


def read_beats(r: Any) -> list[ConsumerBeat]:
    return [ConsumerBeat(**orjson.loads(v)) for _, v in sorted(r.hgetall(STREAM_CONSUMERS).items())]


def write_job(r: Any, job: JobRecord) -> None:
    r.hset(JOBS, job.name, orjson.dumps(asdict(job)))


def read_jobs(r: Any) -> list[JobRecord]:
    return [JobRecord(**orjson.loads(v)) for _, v in sorted(r.hgetall(JOBS).items())]


def write_scheduler_beat(r: Any, pid: int, host: str, started_ms: int) -> None:
    r.hset(SCHEDULER, mapping={"pid": pid, "host": host, "started_ms": started_ms, "at_ms": _now_ms()})


def stream_report(r: Any, lag: dict[str, int] | None = None, now_ms: int | None = None) -> dict[str, Any]:
    """``{attached, consumers: [...], lag, last_applied_ms}`` (what /readyz and the admin status show)."""
    now = now_ms or _now_ms()
    beats = read_beats(r)
    live = [b for b in beats if b.attached(now)]
    last = max((b.last_applied_ms for b in beats if b.last_applied_ms), default=None)
    return {"attached": bool(live), "consumers": [{**asdict(b), "attached": b.attached(now)} for b in beats],
            "lag": lag or {}, "last_applied_ms": last,
            "last_applied_age_s": None if last is None else round((now - last) / 1000.0, 3)}


def scheduler_report(r: Any, now_ms: int | None = None) -> dict[str, Any]:
    """``{running, heartbeat_age_s, jobs: [...]}``."""
    now = now_ms or _now_ms()
    raw = {k.decode(): v.decode() for k, v in r.hgetall(SCHEDULER).items()}
    at = int(raw["at_ms"]) if raw.get("at_ms") else None
    return {"running": at is not None and now - at <= STALE_MS,
            "heartbeat_age_s": None if at is None else round((now - at) / 1000.0, 3),
            "pid": int(raw["pid"]) if raw.get("pid") else None,
            "jobs": [asdict(j) for j in read_jobs(r)]}


def resident_loop(run_once: Any, print_line: Any = print, errors: Any = None, lines: Any = None) -> None:
    """The child side of a resident job: one ``run_once()`` per :data:`RESIDENT_RUN` line of ``lines``
    (default stdin) until it closes, each followed by ``@@end 0``, or ``@@end 2`` after a failure
    ``errors(exc)`` turns into one line (other exceptions end the process, as a one-shot job's would)."""
    import sys

    for line in lines if lines is not None else sys.stdin:
        if line.strip() != RESIDENT_RUN:
            continue
        try:
            run_once()
            code = 0
        except Exception as exc:
            message = errors(exc) if errors is not None else None
            if message is None:
                raise
            print_line(message)
            code = 2
        print_line(f"{RESIDENT_END}{code}")
