"""Compute backend: GPU (cupy + cudf) or CPU (numpy + pandas), chosen once by ``JAIKOD_DEVICE``.

``auto`` picks the GPU when cupy imports and sees a CUDA device, else the CPU. ``gpu`` on a
machine without one raises :class:`DeviceError` naming exactly what is missing.

    >>> from gpu_core.device import backend
    >>> be = backend()
    >>> be.xp.asarray([1, 2, 3]).sum()
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from gpu_core.errors import DeviceError
from gpu_core.settings import get_settings


@dataclass(frozen=True)
class Backend:
    name: str  # "cpu" | "gpu"
    xp: ModuleType  # numpy | cupy
    frames: ModuleType  # pandas | cudf
    reason: str  # why this backend was chosen

    @property
    def is_gpu(self) -> bool:
        return self.name == "gpu"

    @property
    def xgb_device(self) -> str:
        return "cuda" if self.is_gpu else "cpu"

    def asarray(self, a: Any, dtype: Any = None):
        """Host (or device) data -> array on this backend."""
        return self.xp.asarray(a, dtype=dtype)

    def to_host(self, a: Any) -> np.ndarray:
        return to_host(a)


def to_host(a: Any) -> np.ndarray:
    """Any array (numpy, cupy, array-api) -> numpy on the host."""
    if isinstance(a, np.ndarray):
        return a
    get = getattr(a, "get", None)  # cupy
    if callable(get):
        return get()
    return np.asarray(a)


def gpu_probe() -> tuple[bool, str]:
    """(available, reason): is a CUDA GPU usable through cupy here?"""
    try:
        cupy = importlib.import_module("cupy")
    except Exception as exc:  # ImportError or a broken CUDA install
        return False, f"cupy is not importable ({type(exc).__name__}: {exc}); install the 'gpu' extra"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return False, f"cupy cannot reach a CUDA driver ({type(exc).__name__}: {exc})"
    if n < 1:
        return False, "no CUDA device is visible (cupy reports 0 devices)"
    return True, f"{n} CUDA device(s) visible"


def _frames_module(gpu: bool) -> ModuleType:
    if not gpu:
        return pd
    try:
        return importlib.import_module("cudf")
    except Exception:
        # cupy without cudf (e.g. a torch/cupy-only GPU box): arrays on device, frames on host.
        return pd


def resolve(device: str) -> Backend:
    """Resolve ``auto|cpu|gpu`` to a :class:`Backend`."""
    if device not in ("auto", "cpu", "gpu"):
        raise DeviceError(f"JAIKOD_DEVICE must be auto, cpu or gpu, got {device!r}", field="device")
    if device == "cpu":
        return Backend("cpu", np, pd, "JAIKOD_DEVICE=cpu")
    ok, why = gpu_probe()
    if ok:
        import cupy

        return Backend("gpu", cupy, _frames_module(True), why)
    if device == "gpu":
        raise DeviceError(f"JAIKOD_DEVICE=gpu but no GPU backend is usable: {why}", field="device")
    return Backend("cpu", np, pd, f"auto: {why}")


@lru_cache(maxsize=1)
def backend() -> Backend:
    """The process-wide backend, from settings."""
    return resolve(get_settings().device)


def reset_backend() -> None:
    backend.cache_clear()


def one_thread_per_request(threads: int = 1) -> None:
    """Cap the native thread pools loaded in this process (OpenBLAS/MKL under numpy, OpenMP under faiss and
    XGBoost) at ``threads``. A serving worker runs one request per core: a pool of several threads per
    BLAS call buys nothing on a 1,000-row matrix-vector product, and its threads spin after each call —
    on 2 cores that doubled the CPU time per feed request (17.3 -> 9.2 ms in process). Call after the
    libraries are loaded (threadpoolctl sees only those)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)
