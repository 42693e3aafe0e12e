"""The deployment's scheduler: jobs from settings, each run a real `jaikod` process recorded in Redis."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from deploy.scheduler import JobSpec, Scheduler, job_specs
from gpu_core import ops
from gpu_core.errors import ConfigError
from gpu_core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_jobs_follow_the_settings():
    specs = {j.name: j for j in job_specs(Settings(schedule_boost_s=0, schedule_continuous_s=60))}
    assert set(specs) == {"nightly", "continuous", "canary", "review", "retention_purge"}  # boost disabled
    assert specs["continuous"].schedule == "every 60 s" and specs["nightly"].schedule == "daily 02:00 UTC"
    assert specs["canary"].executor == "light" and specs["continuous"].executor == "heavy"
    with pytest.raises(ConfigError, match="HH:MM"):
        job_specs(Settings(schedule_nightly_utc="25:00"))


def test_a_run_is_recorded_with_its_result_and_next_run(redis_server, redis_client, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    s = Settings(redis_url=redis_server.url)
    lines: list[str] = []
    specs = [JobSpec("help", ("model", "--help"), "interval", every_s=3600),
             JobSpec("broken", ("model", "no-such-command"), "interval", every_s=3600)]
    sched = Scheduler(s, redis_client, specs, out=lines.append, background=True)
    sched.setup()
    sched.sched.start(paused=True)  # next run times are computed; nothing runs by itself
    try:
        assert sched.run_job(specs[0]) == "ok"
        assert sched.run_job(specs[1]).startswith("failed (exit 2)")
        sched.beat()
    finally:
        sched.sched.shutdown(wait=False)
    jobs = {j["name"]: j for j in ops.scheduler_report(redis_client)["jobs"]}
    assert jobs["help"]["last_result"] == "ok" and jobs["help"]["runs"] == 1
    assert jobs["help"]["next_run_ms"] > jobs["help"]["last_end_ms"]
    assert jobs["broken"]["failures"] == 1 and "no-such-command" in jobs["broken"]["last_message"]
    assert any(line.startswith("[help] ") for line in lines)  # each output line tagged with its job
    assert ops.scheduler_report(redis_client)["running"]


def test_deploy_imports_only_gpu_core():
    for p in (ROOT / "deploy").rglob("*.py"):
        tree = ast.parse(p.read_text())
        mods = {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        mods |= {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not mods & {"online", "batch", "engines", "kernels"}, p


def test_a_resident_job_keeps_its_process_between_runs(redis_server, redis_client, monkeypatch, tmp_path):
    """The canary check runs in one long-lived `jaikod model canary-check --stdin` process: two runs, one
    process; a killed one is started again at the next run, and shutdown stops it."""
    import os
    import signal

    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("JAIKOD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("JAIKOD_REDIS_URL", redis_server.url)
    s = Settings(redis_url=redis_server.url)
    spec = next(j for j in job_specs(s) if j.name == "canary")
    assert spec.resident
    lines: list[str] = []
    sched = Scheduler(s, redis_client, [spec], out=lines.append, background=True)
    sched.setup()
    sched.sched.start(paused=True)
    try:
        assert sched.run_job(spec) == "ok"
        first = sched.residents["canary"]
        assert sched.run_job(spec) == "ok" and sched.residents["canary"] is first and first.poll() is None
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        assert sched.run_job(spec) == "ok" and sched.residents["canary"].pid != first.pid
    finally:
        sched.shutdown()
    sched.residents["canary"].wait(timeout=10)  # stopped with the scheduler
    job = {j["name"]: j for j in ops.scheduler_report(redis_client)["jobs"]}["canary"]
    assert job["runs"] == 3 and job["failures"] == 0 and job["command"][-1] == "--stdin"
    assert job["last_message"] == "canary: nothing to decide (no staging model)"
    assert sum(line == "[canary] canary: nothing to decide (no staging model)" for line in lines) == 3
    assert not any(ops.RESIDENT_END in line for line in lines)  # the protocol's line is not job output


def test_resident_loop_answers_each_run_and_turns_expected_errors_into_a_line():
    from gpu_core.errors import JaikodError

    calls: list[int] = []
    out: list[str] = []

    def once() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise JaikodError("registry unreachable")

    ops.resident_loop(once, out.append, errors=lambda e: f"error: {e}" if isinstance(e, JaikodError) else None,
                      lines=["run\n", "\n", "run\n", "run\n"])
    assert out == ["@@end 0", "error: registry unreachable", "@@end 2", "@@end 0"] and len(calls) == 3
    with pytest.raises(ZeroDivisionError):  # an unexpected failure ends the process (the scheduler restarts it)
        ops.resident_loop(lambda: 1 / 0, out.append, errors=lambda e: None, lines=["run\n"])


def test_no_job_starts_once_shutdown_began(redis_server, redis_client):
    """Ctrl-C under `make run` left a `jaikod batch review` that APScheduler fired during the shutdown running
    after everything else had stopped: after shutdown() a run starts no process."""
    s = Settings(redis_url=redis_server.url)
    spec = JobSpec("review", ("batch", "review"), "interval", every_s=3600)
    sched = Scheduler(s, redis_client, [spec], out=lambda _line: None, background=True)
    sched.setup()
    sched.sched.start(paused=True)
    sched.shutdown()
    assert sched.run_job(spec) == "skipped (shutting down)"
    assert sched.children == {} and sched.records["review"].runs == 0
