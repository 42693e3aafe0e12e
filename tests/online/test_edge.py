"""The edge's shed pacing (online.edge.ShedPacer), pure logic: a connection retrying at once is held longer
each time, up to the cap; one that waits its Retry-After, or gets admitted, starts again at the first pause."""

from __future__ import annotations

import pytest

from online.edge import ShedPacer


def test_a_connection_retrying_at_once_backs_off_to_the_cap():
    p = ShedPacer(first_s=0.01, max_s=0.2, window_s=1.0)
    a, b = ("127.0.0.1", 5001), ("127.0.0.1", 5002)
    pauses = [p.delay(a, 100.0 + i * 0.01) for i in range(8)]
    assert pauses == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.16, 0.2, 0.2, 0.2])
    assert p.delay(b, 100.1) == pytest.approx(0.01)  # another connection is not paced for a's retries
    assert p.delay(a, 100.1 + 1.5) == pytest.approx(0.01)  # came back after its Retry-After: first pause
    p.delay(a, 102.0)
    p.admitted(a)  # got through: forgotten
    assert p.delay(a, 102.01) == pytest.approx(0.01)


def test_pacer_remembers_a_bounded_number_of_connections():
    p = ShedPacer(first_s=0.01, max_s=0.2, window_s=1.0, keep=8)
    for i in range(8):
        p.delay(("h", i), 10.0)
    for i in range(8, 40):
        p.delay(("h", i), 20.0 + i * 0.001)  # the first 8 are quiet by now: forgotten first
    assert len(p._last) <= 8
    assert p.delay(("h", 39), 20.05) == pytest.approx(0.02)  # a recent one is still remembered
    off = ShedPacer(first_s=0.0, max_s=0.0, window_s=1.0)
    assert [off.delay("c", 1.0 + i * 0.01) for i in range(3)] == [0.0, 0.0, 0.0]  # pacing off
