"""The Airflow DAG (deploy/airflow/dags/jaikod.py) in Airflow's own virtualenv (.venv-airflow, built by
scripts/airflow_venv.sh, in the background during `make test`): it parses without importing the service,
follows the job table (deploy/jobs.py) that the local scheduler runs, and `airflow dags test` runs every
task -- a real `jaikod` process of this venv -- in the chain's order. The tasks run in dry-run mode
(JAIKOD_AIRFLOW_DRY_RUN=1: `jaikod <job> --help`, so each command line and option is checked by the CLI
itself, the work is not done); a second run makes the nightly fail and checks the trigger rules."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.jobs import DAILY_CHAIN, JOBS, job
from gpu_core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "deploy" / "airflow" / "dags"
DAG_ID = "jaikod_daily"

PARSE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags.get(sys.argv[2])
out = {"errors": {k: str(v)[-500:] for k, v in bag.import_errors.items()},
       "service_modules": sorted(m for m in sys.modules if m.split(".")[0] in
                                 ("gpu_core", "online", "batch", "engines", "kernels", "jaikod_cli")
                                 or m == "deploy.scheduler")}
if dag is not None:
    out["schedule"], out["timetable"] = str(dag.schedule), repr(dag.timetable)
    out["tasks"] = {t.task_id: {"cmd": getattr(t, "bash_command", None), "upstream": sorted(t.upstream_task_ids),
                                "trigger_rule": getattr(t.trigger_rule, "value", t.trigger_rule)} for t in dag.tasks}
import os
os.environ["JAIKOD_SCHEDULE_NIGHTLY_UTC"] = "04:15"
out["moved_schedule"] = str(DagBag(dag_folder=sys.argv[1]).dags[sys.argv[2]].schedule)
print(json.dumps(out))
"""


@pytest.fixture(scope="session")
def airflow_bin() -> Path:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "airflow_venv.sh")], capture_output=True, text=True,
                         timeout=1200)
    if out.returncode != 0:
        raise RuntimeError(f"scripts/airflow_venv.sh failed ({out.returncode}): {out.stderr[-2000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def airflow_env(airflow_bin, tmp_path_factory) -> dict[str, str]:
    """A private AIRFLOW_HOME (sqlite metadata DB, migrated), the DAG folder of this checkout, the service's
    CLI as JAIKOD_BIN (this interpreter, this checkout first on PYTHONPATH)."""
    home = tmp_path_factory.mktemp("airflow_home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "JAIKOD_AIRFLOW"))}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__DAGS_FOLDER=str(DAGS), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__LOGGING__LOGGING_LEVEL="INFO", JAIKOD_BIN=f"{sys.executable} -m jaikod_cli",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p))
    migrate = subprocess.run([str(airflow_bin), "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-2000:]
    return env


def _parse(airflow_bin: Path, env: dict[str, str]) -> dict:
    python = airflow_bin.parent / "python"
    out = subprocess.run([str(python), "-c", PARSE, str(DAGS), DAG_ID], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_dag_follows_the_job_table_without_importing_the_service(airflow_bin, airflow_env):
    got = _parse(airflow_bin, airflow_env)
    assert got["errors"] == {} and got["service_modules"] == []
    tasks = got["tasks"]
    assert list(tasks) == [*DAILY_CHAIN, "watcher"] and set(DAILY_CHAIN) <= {j.name for j in JOBS}
    assert tasks["watcher"]["upstream"] == sorted(DAILY_CHAIN) and tasks["watcher"]["trigger_rule"] == "one_failed"
    for i, name in enumerate(DAILY_CHAIN):
        assert tasks[name]["upstream"] == ([DAILY_CHAIN[i - 1]] if i else [])
        assert " ".join(job(name).args) in tasks[name]["cmd"] and "JAIKOD_BIN" in tasks[name]["cmd"]
    assert tasks["continuous"]["trigger_rule"] == "all_success"
    assert tasks["retention_purge"]["trigger_rule"] == "all_done"
    hh, mm = (int(x) for x in Settings().schedule_nightly_utc.split(":"))  # the DAG's default = the setting's
    assert got["schedule"] == f"{mm} {hh} * * *" and "UTC" in got["timetable"]
    assert got["moved_schedule"] == "15 4 * * *"  # JAIKOD_SCHEDULE_NIGHTLY_UTC=04:15 at parse time


def _dags_test(airflow_bin: Path, env: dict[str, str], day: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(airflow_bin), "dags", "test", DAG_ID, day], env={**env, "JAIKOD_AIRFLOW_DRY_RUN": "1"},
                          capture_output=True, text=True, timeout=600)


def _ended(log: str) -> list[str]:
    return re.findall(r"\[DAG TEST\] end task task_id=(\w+)", log)


def test_dags_test_runs_every_task_in_order(airflow_bin, airflow_env):
    out = _dags_test(airflow_bin, airflow_env, "2026-11-30")
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert _ended(log) == list(DAILY_CHAIN)  # the watcher is skipped: nothing failed
    for name in DAILY_CHAIN:  # each task ran the job's own subcommand (its usage line) and succeeded
        assert re.search(r"Usage: jaikod_cli\.py " + re.escape(" ".join(a for a in job(name).args
                                                                         if not a.startswith("-") and not a.isdigit())),
                         log), name
    assert log.count("Command exited with return code 0") == len(DAILY_CHAIN)
    assert re.search(r"DagRun Finished: dag_id=jaikod_daily.*state=success", log), log[-2000:]


def test_a_failed_nightly_skips_the_check_but_not_the_purge(airflow_bin, airflow_env, tmp_path):
    wrapper = tmp_path / "jaikod"
    wrapper.write_text(f'#!/bin/bash\n[ "$1 $2" = "batch nightly" ] && exit 1\nexec {sys.executable} -m jaikod_cli "$@"\n')
    wrapper.chmod(0o755)
    out = _dags_test(airflow_bin, {**airflow_env, "JAIKOD_BIN": str(wrapper), "JAIKOD_AIRFLOW_RETRIES": "0"},
                     "2026-11-29")
    log = out.stdout + out.stderr
    ran = _ended(log)
    assert "continuous" not in ran and {"boost", "review", "retention_purge", "watcher"} <= set(ran), log[-4000:]
    # the purge (a leaf) succeeded, yet the run is failed: the watcher saw the nightly fail
    assert re.search(r"DagRun Finished: dag_id=jaikod_daily.*state=failed", log), log[-2000:]
