"""The scheduler of a local deployment (``jaikod scheduler``, one of the processes of ``make run``):
APScheduler runs the periodic jobs, each as its own ``jaikod …`` process (a crash or a leak of one job
never takes the scheduler down, and a job's memory is returned when it ends).

=====================  ===========================================  =================================
job                    command                                      schedule (setting)
=====================  ===========================================  =================================
``nightly``            ``jaikod batch nightly``                     daily ``schedule_nightly_utc`` (02:00 UTC)
``continuous``         ``jaikod batch continuous``                  every ``schedule_continuous_s`` (120 s)
``canary``             ``jaikod model canary-check``                every ``schedule_canary_s`` (30 s)
``boost``              ``jaikod boost run``                         every ``schedule_boost_s`` (1 h)
``review``             ``jaikod batch review``                      every ``schedule_review_s`` (5 min)
``retention_purge``    ``jaikod vision-purge --older-than-days 30``  daily ``schedule_purge_utc`` (03:30 UTC)
=====================  ===========================================  =================================

Heavy jobs (nightly, continuous, boost, review, purge) share one worker thread, so two trainings never
run at once on a small machine; the canary check has its own. The canary check is a *resident* job
(:mod:`gpu_core.ops`): its ``jaikod model canary-check --stdin`` process stays up and runs one check per
line the scheduler sends, so a run costs the check (a few ms) rather than a Python start and MLflow's
import (4.7-5.2 s CPU per run, every 30 s); a resident child that died or timed out is started again at
the next run. A job that is still running when it is
due again is skipped (``max_instances=1``, missed runs coalesced). Every run is recorded in Redis
(:mod:`gpu_core.ops`: ``jk:ops:jobs``, last start/end/result/message and next run), with a heartbeat
of the scheduler itself (``jk:ops:scheduler``), read back by ``/readyz`` and ``GET /v1/admin/status``.
The job table itself is :mod:`deploy.jobs`, shared with the production counterpart, the Airflow DAG
``deploy/airflow/dags/jaikod.py`` (see ``deploy/airflow/README.md``).

Each output line of a job is printed prefixed with ``[job]`` (the process manager adds ``scheduler |``).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from deploy.jobs import JOBS
from gpu_core import ops
from gpu_core.errors import ConfigError
from gpu_core.redis_client import connect
from gpu_core.settings import Settings, get_settings

log = logging.getLogger("jaikod.scheduler")


@dataclass(frozen=True)
class JobSpec:
    name: str
    args: tuple[str, ...]  # jaikod arguments
    kind: str  # "interval" | "daily"
    every_s: float = 0.0
    at_utc: str = ""  # HH:MM for daily jobs
    executor: str = "heavy"
    resident: bool = False  # one long-lived process (args + --stdin), one run per line sent to it

    @property
    def schedule(self) -> str:
        return f"every {self.every_s:g} s" if self.kind == "interval" else f"daily {self.at_utc} UTC"

    def trigger(self):
        if self.kind == "interval":
            return IntervalTrigger(seconds=self.every_s, timezone=dt.UTC)
        hh, mm = _hhmm(self.at_utc, self.name)
        return CronTrigger(hour=hh, minute=mm, timezone=dt.UTC)


def _hhmm(text: str, name: str) -> tuple[int, int]:
    try:
        hh, mm = (int(x) for x in text.split(":"))
        if not (0 <= hh < 24 and 0 <= mm < 60):
            raise ValueError
        return hh, mm
    except ValueError:
        raise ConfigError(f"schedule of {name} must be HH:MM (UTC), got {text!r}", field=f"schedule_{name}") from None


def job_specs(s: Settings) -> list[JobSpec]:
    """The deployment's jobs (:data:`deploy.jobs.JOBS`) on their schedules (settings ``schedule_*``); an
    interval <= 0 disables a job."""
    jobs = []
    for j in JOBS:
        value = getattr(s, j.setting)
        jobs.append(JobSpec(j.name, j.args, j.kind, every_s=float(value) if j.kind == "interval" else 0.0,
                            at_utc=str(value) if j.kind == "daily" else "", executor=j.executor,
                            resident=j.resident))
    for j in jobs:
        if j.kind == "daily":
            _hhmm(j.at_utc, j.name)
    return [j for j in jobs if j.kind == "daily" or j.every_s > 0]


def jaikod_command(args: Sequence[str]) -> list[str]:
    """``jaikod ARGS`` with this interpreter (the deployment's venv)."""
    return [sys.executable, "-m", "jaikod_cli", *args]


class Scheduler:
    """APScheduler over :func:`job_specs`, recording every run in Redis."""

    def __init__(self, settings: Settings | None = None, client: redis.Redis | None = None,
                 specs: list[JobSpec] | None = None, out: Callable[[str], None] | None = None,
                 run_now: Sequence[str] = (), background: bool = False):
        self.s = settings or get_settings()
        self.r = client or connect(self.s.redis_url, socket_timeout=5.0, socket_connect_timeout=5.0)
        self.specs = specs if specs is not None else job_specs(self.s)
        self.out = out or (lambda line: print(line, flush=True))
        self.run_now = set(run_now)
        self.records = {j.name: ops.JobRecord(j.name, j.schedule, jaikod_command(
            (*j.args, "--stdin") if j.resident else j.args)) for j in self.specs}
        self.children: dict[str, subprocess.Popen] = {}
        self.residents: dict[str, subprocess.Popen] = {}  # resident jobs' processes, kept between runs
        self.stopping = False  # set by shutdown(): no job process starts after it (it would outlive us)
        self._lock = threading.Lock()
        self.started_ms = int(time.time() * 1000)
        cls = BackgroundScheduler if background else BlockingScheduler  # background: tests, embedding
        self.sched = cls(
            executors={"heavy": ThreadPoolExecutor(1), "light": ThreadPoolExecutor(1),
                       "default": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None}, timezone=dt.UTC)

    # ---- recording -------------------------------------------------------------------------------
    def _save(self, name: str) -> None:
        rec = self.records[name]
        job = self.sched.get_job(name)
        nxt = getattr(job, "next_run_time", None) if job is not None else None
        rec.next_run_ms = int(nxt.timestamp() * 1000) if nxt is not None else None
        try:
            ops.write_job(self.r, rec)
        except redis.RedisError as exc:
            log.warning("job record not written: %s", exc)

    def beat(self) -> None:
        try:
            ops.write_scheduler_beat(self.r, os.getpid(), socket.gethostname(), self.started_ms)
            for name in self.records:
                self._save(name)
        except redis.RedisError as exc:
            log.warning("scheduler heartbeat failed: %s", exc)

    # ---- one run -------------------------------------------------------------------------------
    def run_job(self, spec: JobSpec) -> str:
        with self._lock:
            if self.stopping:  # a run APScheduler fired while Ctrl-C was being handled
                return "skipped (shutting down)"
        rec = self.records[spec.name]
        rec.last_start_ms, rec.last_end_ms, rec.last_result = int(time.time() * 1000), None, "running"
        rec.runs += 1
        self._save(spec.name)
        self.out(f"[{spec.name}] start: jaikod {' '.join(spec.args)}")
        last = ""
        try:
            proc = self._resident(spec) if spec.resident else subprocess.Popen(
                jaikod_command(spec.args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                start_new_session=True)
            with self._lock:
                self.children[spec.name] = proc
                if self.stopping:  # shutdown ran between the check above and the start
                    self._kill(proc)
            timer = threading.Timer(self.s.job_timeout_s, self._kill, args=(proc,))
            timer.start()
            code = None
            for line in proc.stdout:
                line = line.rstrip()
                if spec.resident and line.startswith(ops.RESIDENT_END):
                    code = int(line[len(ops.RESIDENT_END):])
                    break
                if line:
                    if any(ch.isalnum() for ch in line):  # the last line that says something (not a table rule)
                        last = line.strip(" │|┃")
                    self.out(f"[{spec.name}] {line}")
            if code is None:  # a one-shot job ended, or a resident one died (started again next run)
                code = proc.wait()
                self.residents.pop(spec.name, None)
            timer.cancel()
        except OSError as exc:
            code, last = -1, f"could not start: {exc}"
            self.residents.pop(spec.name, None)
        finally:
            with self._lock:
                self.children.pop(spec.name, None)
        rec.last_end_ms = int(time.time() * 1000)
        rec.last_result = "ok" if code == 0 else f"failed (exit {code})"
        rec.failures += code != 0
        rec.last_message = last[-300:]
        self._save(spec.name)
        self.out(f"[{spec.name}] {rec.last_result} in {(rec.last_end_ms - rec.last_start_ms) / 1000:.1f} s")
        return rec.last_result

    def _resident(self, spec: JobSpec) -> subprocess.Popen:
        """The resident job's process (started when absent or dead), asked for one run."""
        proc = self.residents.get(spec.name)
        if proc is None or proc.poll() is not None:
            proc = subprocess.Popen([*jaikod_command(spec.args), "--stdin"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                    start_new_session=True)
            self.residents[spec.name] = proc
        try:
            proc.stdin.write(ops.RESIDENT_RUN + "\n")
            proc.stdin.flush()
        except OSError:  # it died between the check and the write: its stdout ends, the run fails
            pass
        return proc

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)

    # ---- the process ---------------------------------------------------------------------------
    def setup(self) -> None:
        now = dt.datetime.now(dt.UTC)
        for spec in self.specs:
            first = now if spec.name in self.run_now else None
            kw = {"next_run_time": first} if first is not None else {}
            self.sched.add_job(self.run_job, spec.trigger(), args=(spec,), id=spec.name, name=spec.name,
                               executor=spec.executor, **kw)
        self.sched.add_job(self.beat, IntervalTrigger(seconds=1.0, timezone=dt.UTC), id="_heartbeat",
                           executor="default", next_run_time=now)

    def shutdown(self, *_: object) -> None:
        with self._lock:
            self.stopping = True
            for proc in [*self.children.values(), *self.residents.values()]:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
        self.sched.shutdown(wait=False)

    def run(self) -> None:
        self.setup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.shutdown)
        self.out("scheduler: " + "; ".join(f"{j.name} {j.schedule}" for j in self.specs))
        try:
            self.sched.start()
        finally:
            try:
                self.r.delete(ops.SCHEDULER)
            except redis.RedisError:
                pass
