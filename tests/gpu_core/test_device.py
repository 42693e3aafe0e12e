"""Backend selection: auto/cpu/gpu, the clear error when a GPU is asked for and missing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gpu_core import device
from gpu_core.errors import DeviceError

HAS_GPU, GPU_REASON = device.gpu_probe()


def test_cpu_backend_is_numpy_and_pandas():
    be = device.resolve("cpu")
    assert be.name == "cpu" and be.xp is np and be.frames is pd
    assert be.xgb_device == "cpu"
    assert isinstance(be.to_host(be.asarray([1, 2])), np.ndarray)


def test_auto_falls_back_to_cpu_with_reason(monkeypatch):
    monkeypatch.setattr(device, "gpu_probe", lambda: (False, "cupy is not importable (test)"))
    be = device.resolve("auto")
    assert be.name == "cpu"
    assert "cupy is not importable" in be.reason


def test_gpu_requested_without_gpu_names_what_is_missing(monkeypatch):
    monkeypatch.setattr(device, "gpu_probe", lambda: (False, "cupy is not importable (No module named 'cupy')"))
    with pytest.raises(DeviceError) as err:
        device.resolve("gpu")
    assert "JAIKOD_DEVICE=gpu" in err.value.message and "cupy" in err.value.message
    assert err.value.field == "device"


def test_unknown_device_value():
    with pytest.raises(DeviceError, match="auto, cpu or gpu"):
        device.resolve("tpu")


def test_backend_follows_settings(monkeypatch):
    from gpu_core.settings import reset_settings

    monkeypatch.setenv("JAIKOD_DEVICE", "cpu")
    reset_settings()
    device.reset_backend()
    try:
        assert device.backend().name == "cpu"
    finally:
        reset_settings()
        device.reset_backend()


def test_to_host_accepts_lists_and_arrays():
    assert device.to_host([1, 2]).tolist() == [1, 2]
    a = np.arange(3)
    assert device.to_host(a) is a


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason=f"no GPU: {GPU_REASON}")
def test_gpu_backend_arrays_and_frames():
    import cupy

    be = device.resolve("gpu")
    assert be.xp is cupy
    x = be.asarray(np.arange(10, dtype=np.float32))
    assert isinstance(x, cupy.ndarray)
    np.testing.assert_array_equal(device.to_host(x * 2), np.arange(10) * 2)
    frame = be.frames.DataFrame({"a": [1, 2, 3]})
    assert int(frame["a"].sum()) == 6


def test_one_thread_per_request_caps_the_loaded_native_pools():
    """A serving worker's BLAS and OpenMP pools run one thread (their spinning threads doubled a feed's CPU)."""
    import faiss  # noqa: F401 - loads its OpenMP runtime
    from threadpoolctl import threadpool_info, threadpool_limits

    from gpu_core.device import one_thread_per_request

    before = threadpool_limits(limits=None)  # nothing changed; restored below
    try:
        one_thread_per_request()
        pools = threadpool_info()
        assert pools and all(p["num_threads"] == 1 for p in pools)
    finally:
        before.restore_original_limits()
