"""Namespace resolution and small portable helpers shared by the kernels (private).

Every kernel accepts ``xp=None``: the namespace is then inferred from the array arguments with
``array_api_compat.array_namespace``. A namespace passed explicitly (``numpy``, ``cupy``,
``array_api_strict``) is normalised through ``array_api_compat`` too, so the kernels always see the
standard-conforming spelling (``xp.concat``, ``xp.cumulative_sum``, ``xp.isdtype`` ...).
"""

from __future__ import annotations

from functools import lru_cache
from types import ModuleType
from typing import Any

import numpy as np
from array_api_compat import array_namespace, is_array_api_obj


@lru_cache(maxsize=16)
def _normalise(xp: ModuleType) -> ModuleType:
    return array_namespace(xp.asarray(0))


def get_xp(*arrays: Any, xp: ModuleType | None = None) -> ModuleType:
    """The array-API namespace for ``arrays`` (or the normalised ``xp`` when given)."""
    if xp is not None:
        return _normalise(xp)
    # numpy scalars (np.float64(...)) are scalars here, not arrays that would pin the namespace
    arrs = [a for a in arrays if is_array_api_obj(a) and not isinstance(a, np.generic)]
    if not arrs:
        return _normalise(np)  # plain Python lists / scalars: compute on numpy
    return array_namespace(*arrs)


def isin_sorted(values: Any, sorted_set: Any, xp: ModuleType) -> Any:
    """Boolean mask ``values[i] in sorted_set`` for a 1-D ascending ``sorted_set`` (binary search)."""
    if sorted_set.shape[0] == 0:
        return xp.zeros(values.shape, dtype=xp.bool)
    dtype = xp.result_type(values.dtype, sorted_set.dtype)
    v = xp.astype(values, dtype)
    s = xp.astype(sorted_set, dtype)
    pos = xp.searchsorted(s, xp.reshape(v, (-1,)), side="left")
    pos = xp.clip(pos, 0, s.shape[0] - 1)
    found = xp.take(s, pos) == xp.reshape(v, (-1,))
    return xp.reshape(found, values.shape)



def host_list(a: Any) -> list:
    """A 1-D array's values as a Python list, from any device (cupy copies once to the host)."""
    return (a.get() if callable(getattr(a, "get", None)) else np.asarray(a)).tolist()
