"""Dask cluster for batch jobs: dask-cuda ``LocalCUDACluster`` on a GPU, ``LocalCluster`` on CPU, or any
``dask.distributed`` scheduler address (``--scheduler`` / ``JAIKOD_SCHEDULER``) for a real cluster.

    >>> with dask_client() as client:
    ...     print(client.dashboard_link)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from distributed import Client, LocalCluster

from gpu_core.device import backend
from gpu_core.settings import get_settings

log = logging.getLogger(__name__)


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, n_workers: int | None = None) -> Iterator[Client]:
    settings = get_settings()
    address = scheduler or settings.scheduler
    if address:
        client = Client(address)
        try:
            yield client
        finally:
            client.close()
        return
    if backend().is_gpu:
        try:
            from dask_cuda import LocalCUDACluster  # type: ignore[import-not-found]

            cluster = LocalCUDACluster(
                host="127.0.0.1", dashboard_address="127.0.0.1:0", silence_logs=logging.WARNING
            )
        except ImportError:
            cluster = None
    else:
        cluster = None
    if cluster is None:
        # Threads, not processes: the work is numpy/pyarrow/xgboost (GIL released), and 2 cores.
        cluster = LocalCluster(
            n_workers=1,
            threads_per_worker=n_workers or settings.dask_workers,
            processes=False,
            protocol="tcp://",  # processes=False defaults to inproc://, which rejects a host:port address
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.WARNING,
        )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def dashboard(client: Client) -> str:
    try:
        return client.dashboard_link
    except Exception:
        return "(no dashboard)"
