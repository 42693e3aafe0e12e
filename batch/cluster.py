"""Dask cluster for batch jobs: dask-cuda ``LocalCUDACluster`` on a GPU, ``LocalCluster`` on CPU, or any
``dask.distributed`` scheduler address (``--scheduler`` / ``JAIKOD_SCHEDULER``) for a real cluster.

    >>> with dask_client() as client:
    ...     print(client.dashboard_link)
    >>> run_on_cluster(run_materialize, lake, day, scheduler="tcp://10.0.0.5:8786")

Every task of a job is a module-level function with picklable arguments (paths, arrays, frames, the lake's
filesystem), so the same graph runs on threads of a local worker and on worker processes or machines.
Workers read their own settings (``JAIKOD_*``) unless a task carries the driver's (:func:`run_on_cluster`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import dask
from distributed import Client, LocalCluster

from gpu_core.device import backend
from gpu_core.settings import Settings, configure, get_settings

log = logging.getLogger(__name__)
T = TypeVar("T")


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


def shared(obj: Any, client: Client | None) -> Any:
    """A large input every task reads: scattered once to the workers (or one graph node locally)."""
    if client is not None:
        return client.scatter(obj, broadcast=True, hash=False)
    return dask.delayed(obj, pure=True)


def compute_in_order(tasks: Iterable[Any], client: Client | None) -> Iterator[Any]:
    """Compute delayed tasks on the Dask client (or the local threaded scheduler), yielding in order."""
    tasks = list(tasks)
    if client is not None:
        for f in client.compute(tasks):
            yield f.result()
        return
    yield from dask.compute(*tasks, scheduler="threads")


def with_settings(settings: dict, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` in a worker process under the driver's settings (the worker's own come back after)."""
    import gpu_core.settings as settings_mod

    before = settings_mod._current
    configure(Settings(**settings))
    try:
        return fn(*args, **kwargs)
    finally:
        settings_mod._current = before


def run_on_cluster(fn: Callable[..., T], *args: Any, scheduler: str | None = None, **kwargs: Any) -> T:
    """A whole job as one task: on the cluster at ``scheduler`` (or ``settings.scheduler``), with the
    driver's settings, so a job with no parallel steps runs where the cluster's memory/GPU is; in this
    process when no scheduler is set (no local cluster is started for one task)."""
    address = scheduler or get_settings().scheduler
    if not address:
        return fn(*args, **kwargs)
    dump = get_settings().model_dump(exclude_unset=True)
    with dask_client(address) as client:
        return client.submit(with_settings, dump, fn, *args, pure=False, **kwargs).result()
