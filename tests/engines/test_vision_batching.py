"""MicroBatcher gathers concurrent calls into one run; errors reach every waiter (pure logic)."""

from __future__ import annotations

import asyncio

import pytest

from engines.vision.batching import MicroBatcher


def test_concurrent_calls_share_a_batch_and_keep_their_order():
    runs: list[list[int]] = []

    def fn(items):
        runs.append(list(items))
        return [x * 10 for x in items]

    b = MicroBatcher(fn, window_ms=50, max_batch=4)

    async def main():
        return await asyncio.gather(*[b.submit(i) for i in range(6)])

    assert asyncio.run(main()) == [0, 10, 20, 30, 40, 50]
    assert sum(b.batches) == 6 and max(b.batches) == 4  # capped at max_batch
    assert sorted(x for r in runs for x in r) == list(range(6))


def test_an_error_reaches_every_waiter_and_the_worker_lives_on():
    def fn(items):
        if any(x < 0 for x in items):
            raise ValueError("bad item")
        return items

    b = MicroBatcher(fn, window_ms=20, max_batch=8)

    async def main():
        bad = await asyncio.gather(b.submit(1), b.submit(-1), return_exceptions=True)
        good = await b.submit(2)
        return bad, good

    bad, good = asyncio.run(main())
    assert all(isinstance(r, ValueError) for r in bad)
    assert good == 2


def test_works_again_in_a_new_event_loop():
    b = MicroBatcher(lambda items: items, window_ms=1, max_batch=2)
    assert asyncio.run(b.submit("a")) == "a"
    assert asyncio.run(b.submit("b")) == "b"  # the worker task of the first loop is gone


@pytest.mark.parametrize("window_ms", [0.0, 5.0])
def test_single_call_runs_alone(window_ms):
    b = MicroBatcher(lambda items: [len(items)] * len(items), window_ms=window_ms, max_batch=16)
    assert asyncio.run(b.submit(object())) == 1
