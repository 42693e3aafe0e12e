"""Micro-batching of concurrent requests: one model run for the requests that arrive together.

    >>> batcher = MicroBatcher(lambda items: [f(x) for x in items], window_ms=4.0, max_batch=16)
    >>> await batcher.submit(item)        # each caller awaits its own result
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class MicroBatcher:
    """Gathers concurrent calls for ``window_ms`` (or until ``max_batch``) and runs ``fn(items)`` once
    in a worker thread; each caller awaits its own result."""

    def __init__(self, fn: Callable[[list[Any]], list[Any]], *, window_ms: float, max_batch: int):
        self.fn, self.window, self.max_batch = fn, window_ms / 1000.0, max_batch
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vision-batch")
        self.batches: list[int] = []  # sizes of the batches run (for the benchmark)

    async def submit(self, item: Any) -> Any:
        loop = asyncio.get_running_loop()
        if self._queue is None or self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._worker())
        fut = loop.create_future()
        await self._queue.put((item, fut))
        return await fut

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        q = self._queue
        while True:
            first = await q.get()
            batch = [first]
            deadline = loop.time() + self.window
            while len(batch) < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(q.get(), timeout))
                except TimeoutError:
                    break
            self.batches.append(len(batch))
            try:
                results = await loop.run_in_executor(self._pool, self.fn, [b[0] for b in batch])
                for (_, fut), res in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(res)
            except Exception as exc:  # every waiter gets the error, the worker lives on
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
