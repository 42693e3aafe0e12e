"""JaiKod's daily jobs as one Airflow DAG: nightly -> continuous check -> boost autopilot -> review
backlog -> retention purge, each task a ``jaikod …`` process of the service's environment
(``BashOperator``), the commands taken from the job table :mod:`deploy.jobs` that the local scheduler
(``jaikod scheduler``) runs too.

Airflow parses this file in its own virtualenv: it imports Airflow and :mod:`deploy.jobs` (standard
library only), never the service's modules. The worker's environment decides, at run time:

- ``JAIKOD_BIN``: the service's CLI (default ``jaikod`` on PATH; may be ``/srv/venv/bin/python -m jaikod_cli``);
- every ``JAIKOD_*`` setting (home, Redis URL, lake, scheduler address ...), passed to the jobs unchanged;
- ``JAIKOD_AIRFLOW_DRY_RUN=1``: each task runs ``jaikod <job> --help`` instead (the suite's ``airflow
  dags test``: the DAG, its order and every command line are real, the work is not done).

Parse time: ``JAIKOD_SCHEDULE_NIGHTLY_UTC`` (HH:MM, the setting of the same name) is the DAG's daily
time; ``JAIKOD_JOB_TIMEOUT_S`` each task's execution timeout; ``JAIKOD_AIRFLOW_RETRIES`` (default 1,
5 minutes apart) its retries.

Trigger rules: the continuous check needs a successful nightly (it compares against what the nightly
wrote); the boost round and the review backlog run after it whatever happened (they work with the model
being served); the retention purge always runs (a legal duty that a failed training must not skip).
Airflow judges a run by its leaf tasks only, so a successful purge would mark a run whose nightly failed
as a success: the ``watcher`` task (trigger rule ``one_failed``, downstream of every job) fails the run
when any job failed, and is skipped otherwise (Airflow's documented watcher pattern).
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import sys
from pathlib import Path

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, TriggerRule, task
from airflow.sdk.exceptions import AirflowException

try:
    from deploy.jobs import DAILY_CHAIN, job
except ImportError:  # the DAG folder is a checkout's deploy/airflow/dags: its root holds deploy/
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    from deploy.jobs import DAILY_CHAIN, job

NIGHTLY_UTC = os.environ.get("JAIKOD_SCHEDULE_NIGHTLY_UTC", "02:00")
JOB_TIMEOUT_S = float(os.environ.get("JAIKOD_JOB_TIMEOUT_S", "3600"))
RETRIES = int(os.environ.get("JAIKOD_AIRFLOW_RETRIES", "1"))
TRIGGER = {"continuous": TriggerRule.ALL_SUCCESS, "boost": TriggerRule.ALL_DONE, "review": TriggerRule.ALL_DONE,
           "retention_purge": TriggerRule.ALL_DONE}


def cron(hhmm: str) -> str:
    """``"02:00"`` -> ``"0 2 * * *"`` (UTC)."""
    hh, mm = (int(x) for x in hhmm.split(":"))
    if not (0 <= hh < 24 and 0 <= mm < 60):
        raise ValueError(f"JAIKOD_SCHEDULE_NIGHTLY_UTC must be HH:MM, got {hhmm!r}")
    return f"{mm} {hh} * * *"


def bash_command(args: tuple[str, ...]) -> str:
    """The task's shell line; ``JAIKOD_BIN`` and the dry-run switch are read when the task runs."""
    return "${JAIKOD_BIN:-jaikod} " + shlex.join(args) + "${JAIKOD_AIRFLOW_DRY_RUN:+ --help}"


with DAG(
    dag_id="jaikod_daily",
    description="JaiKod: nightly -> continuous check -> boost autopilot -> review backlog -> retention purge",
    schedule=cron(NIGHTLY_UTC),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": RETRIES, "retry_delay": dt.timedelta(minutes=5),
                  "execution_timeout": dt.timedelta(seconds=JOB_TIMEOUT_S)},
    tags=["jaikod"],
) as dag:
    previous = None
    jobs = []
    for name in DAILY_CHAIN:
        spec = job(name)
        op = BashOperator(task_id=name, bash_command=bash_command(spec.args), doc=spec.summary,
                          trigger_rule=TRIGGER.get(name, TriggerRule.ALL_SUCCESS))
        if previous is not None:
            previous >> op
        previous = op
        jobs.append(op)

    @task(trigger_rule=TriggerRule.ONE_FAILED, retries=0)
    def watcher() -> None:
        raise AirflowException("a JaiKod job of this run failed (see its task log)")

    jobs >> watcher()
