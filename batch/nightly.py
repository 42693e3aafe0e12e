"""The nightly job: etl -> embeddings -> train -> evaluate -> register -> materialise, on one Dask client.

On the cluster (``--scheduler``): the ETL's per-day tasks, the embedding fit (one task) and the two ranker
fits (two tasks) run on the workers; logging/registering in MLflow and materialising into Redis stay in
this process (they need the driver's settings and stores). Workers read and write the lake at the same
path or URL, so it must be shared: the same machine, a shared volume, or an ``s3://`` lake."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from batch.cluster import dashboard, dask_client
from batch.embeddings import run_embeddings
from batch.etl import run_etl
from batch.materialize import run_materialize
from batch.train import run_train

STEPS = ("etl", "embeddings", "train+evaluate+register", "materialize")


def run_nightly(lake: Path, as_of: dt.date | str | None = None, scheduler: str | None = None,
                progress: Callable[[str, int, int], None] | None = None,
                announce: Callable[[str], None] = print) -> dict:
    report = progress or (lambda *_: None)
    results: dict = {}
    with dask_client(scheduler) as client:
        announce(f"Dask dashboard: {dashboard(client)}")
        report("nightly", 0, len(STEPS))
        etl = run_etl(lake, as_of, progress=progress, client=client)
        results["etl"] = etl.as_rows()
        report("nightly", 1, len(STEPS))
        results["embeddings"] = client.submit(run_embeddings, lake, etl.as_of, pure=False).result().as_rows()
        report("nightly", 2, len(STEPS))
        train = run_train(lake, etl.as_of, bootstrap_production=True, client=client)
        results["train"] = train.as_rows()
        report("nightly", 3, len(STEPS))
        results["materialize"] = run_materialize(lake, etl.as_of).as_rows()
        report("nightly", 4, len(STEPS))
    return results
