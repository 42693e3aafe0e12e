"""Kernel tests run on every array-API namespace available on the CPU: numpy and array-api-strict."""

from __future__ import annotations

import importlib

import pytest

NAMESPACES = ["numpy", "array_api_strict"]


@pytest.fixture(params=NAMESPACES, scope="session")
def xp(request):
    """The namespace under test (session-scoped so hypothesis tests can use it)."""
    return importlib.import_module(request.param)
