from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.slots import inject_slots


def _run(xp, organic, sponsored, slots=(4, 12), n=20):
    ids, flag = inject_slots(
        xp.asarray(np.asarray(organic, dtype=np.int64)),
        xp.asarray(np.asarray(sponsored, dtype=np.int64)),
        slots=slots,
        n=n,
    )
    return np.asarray(ids).tolist(), np.asarray(flag).tolist()


def test_default_slots(xp):
    organic = list(range(100, 130))
    ids, flag = _run(xp, organic, [900, 901, 902])
    assert len(ids) == 20
    assert ids[3] == 900 and ids[11] == 901
    assert [i for i, f in enumerate(flag) if f] == [3, 11]
    assert [x for x, f in zip(ids, flag, strict=True) if not f] == organic[:18]


def test_sponsored_already_organic_is_not_duplicated(xp):
    ids, flag = _run(xp, [1, 2, 3, 4, 5, 6], [5, 9])
    assert ids == [1, 2, 3, 5, 4, 6]
    assert flag == [False, False, False, True, False, False]


def test_fewer_sponsored_than_slots(xp):
    ids, flag = _run(xp, list(range(30)), [77])
    assert ids[3] == 77 and sum(flag) == 1 and len(ids) == 20
    assert ids[11] == 10  # the unused slot holds an organic item


def test_short_list_skips_unreachable_slot(xp):
    ids, flag = _run(xp, [1, 2], [9, 8])
    assert ids == [1, 2] and flag == [False, False]
    ids, flag = _run(xp, [1, 2, 3], [9])
    assert ids == [1, 2, 3, 9] and flag == [False, False, False, True]
    # the skipped sponsored id stays in its organic place
    ids, flag = _run(xp, [1, 2, 3], [2])
    assert ids == [1, 2, 3] and not any(flag)


def test_duplicate_sponsored_ids_use_distinct_slots(xp):
    ids, flag = _run(xp, list(range(20)), [50, 50, 51])
    assert ids[3] == 50 and ids[11] == 51 and ids.count(50) == 1


def test_empty_inputs(xp):
    assert _run(xp, [], [1]) == ([], [])
    ids, flag = _run(xp, [1, 2, 3, 4, 5], [])
    assert ids == [1, 2, 3, 4, 5] and not any(flag)


@settings(max_examples=80, deadline=None)
@given(
    organic=st.lists(st.integers(0, 60), unique=True, max_size=40),
    sponsored=st.lists(st.integers(0, 80), max_size=4),
    slots=st.lists(st.integers(1, 25), unique=True, max_size=3),
    n=st.integers(1, 25),
)
def test_properties(xp, organic, sponsored, slots, n):
    ids, flag = _run(xp, organic, sponsored, slots=tuple(slots), n=n)
    assert len(ids) == len(flag) <= n
    assert len(set(ids)) == len(ids)  # no duplicates
    placed_at = [i + 1 for i, f in enumerate(flag) if f]
    placed = [x for x, f in zip(ids, flag, strict=True) if f]
    assert set(placed_at) <= set(slots)  # exact slot positions
    distinct_sp = list(dict.fromkeys(sponsored))
    assert placed == distinct_sp[: len(placed)]  # in sponsored rank order
    used_slots = sorted(s for s in slots if s <= n)
    assert placed_at == used_slots[: len(placed_at)]  # earliest slots first, no gaps
    rest = [x for x, f in zip(ids, flag, strict=True) if not f]
    expected_organic = [x for x in organic if x not in set(placed)]
    assert rest == expected_organic[: len(rest)]  # organic order kept, nothing skipped
    if len(organic) >= n + len(slots):  # plenty of organic items: every usable slot is filled
        assert len(ids) == n
        assert len(placed) == min(len(distinct_sp), len(used_slots))
