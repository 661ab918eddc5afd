"""Micro-batching: concurrent requests share one forward pass (up to ``max_batch`` items, or what
arrived within ``max_wait_ms`` of the first), run off the event loop.

Written here rather than taken from a serving framework: the service is one FastAPI app whose
contract, error format and tests already exist, and batching is the one piece it lacks; LitServe
would bring its own server, routing and error handling in exchange (see the README)."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from fastapi.concurrency import run_in_threadpool

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class BatchStats:
    """Counts for /metrics and tests."""

    batches: int = 0
    items: int = 0
    sizes: list[int] = field(default_factory=list)

    def record(self, size: int) -> None:
        self.batches += 1
        self.items += size
        self.sizes = (self.sizes + [size])[-1000:]


class MicroBatcher(Generic[T, R]):
    """``await batcher.submit(item)`` returns ``run_batch([... item ...])``'s answer for that item.

    One queue and one worker task per event loop (created on first use), so the batcher works
    under any server or test client; ``run_batch`` runs in a worker thread."""

    def __init__(self, run_batch: Callable[[Sequence[T]], list[R]], max_batch: int = 16,
                 max_wait_ms: float = 5.0, on_batch: Callable[[int, float], None] | None = None) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError("max_batch must be >= 1 and max_wait_ms >= 0")
        self.run_batch, self.max_batch, self.max_wait = run_batch, max_batch, max_wait_ms / 1000
        self.on_batch = on_batch
        self.stats = BatchStats()
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Queue[Any]] = \
            weakref.WeakKeyDictionary()
        self._tasks: set[asyncio.Task[None]] = set()

    def _queue(self) -> asyncio.Queue[tuple[T, asyncio.Future[R]]]:
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = asyncio.Queue()
            task = loop.create_task(self._worker(queue))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return queue

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue().put((item, future))
        return await future

    async def _worker(self, queue: asyncio.Queue[tuple[T, asyncio.Future[R]]]) -> None:
        while True:
            batch = [await queue.get()]
            deadline = time.perf_counter() + self.max_wait
            while len(batch) < self.max_batch:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
            live = [(item, fut) for item, fut in batch if not fut.cancelled()]
            if not live:
                continue
            start = time.perf_counter()
            try:
                results = await run_in_threadpool(self.run_batch, [item for item, _ in live])
            except Exception as exc:  # noqa: BLE001  (handed to every waiting request)
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.stats.record(len(live))
            if self.on_batch is not None:
                self.on_batch(len(live), time.perf_counter() - start)
            for (_, fut), result in zip(live, results):
                if not fut.done():
                    fut.set_result(result)
