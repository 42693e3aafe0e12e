"""The periodic jobs of a deployment, as data: the one table that the local scheduler
(:mod:`deploy.scheduler`, APScheduler) and the Airflow DAG (``deploy/airflow/dags/jaikod.py``) both read.

Standard library only, and no import of the project: Airflow's scheduler parses the DAG in its own
virtualenv (``.venv-airflow``) where none of the service's dependencies exist; every job runs as a
``jaikod …`` process of the service's own environment.

``DAILY_CHAIN`` is the order of the Airflow DAG: the nightly rebuild first, then the jobs that read what
it wrote (the continuous-training check, one boost-autopilot round, the review backlog), the retention
purge last. The canary check stays with the local scheduler only: a decision every 30 s by a resident
process is a control loop, not a batch task (Airflow's minimum useful interval is minutes, and each
task would pay a Python start and MLflow's import).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Job:
    name: str
    args: tuple[str, ...]  # jaikod arguments
    kind: str  # "interval" | "daily"
    setting: str  # the Settings field (gpu_core/settings.py) that holds its schedule
    summary: str
    executor: str = "heavy"  # the local scheduler's thread: heavy jobs never run two at once
    resident: bool = False  # one long-lived process (args + --stdin), one run per line sent to it


JOBS: tuple[Job, ...] = (
    Job("nightly", ("batch", "nightly"), "daily", "schedule_nightly_utc",
        "ETL, embeddings, labels, training, evaluation, registry, materialisation"),
    Job("continuous", ("batch", "continuous"), "interval", "schedule_continuous_s",
        "the continuous-training trigger: drift / new interactions -> retrain"),
    Job("canary", ("model", "canary-check"), "interval", "schedule_canary_s",
        "one canary decision (promote / roll back staging)", executor="light", resident=True),
    Job("boost", ("boost", "run"), "interval", "schedule_boost_s", "one round of the boost autopilot"),
    Job("review", ("batch", "review"), "interval", "schedule_review_s", "the post-hoc review backlog"),
    Job("retention_purge", ("vision-purge", "--older-than-days", "30"), "daily", "schedule_purge_utc",
        "30-day retention purge of the encrypted eKYC cold store"),
)

DAILY_CHAIN: tuple[str, ...] = ("nightly", "continuous", "boost", "review", "retention_purge")


def job(name: str) -> Job:
    for j in JOBS:
        if j.name == name:
            return j
    raise KeyError(name)
