"""When each object's loop runs next, and a fixed pool of workers that runs it.

One due time per object in a heap, one dispatcher that sleeps until the earliest, and a few
workers per kind (as controller-runtime's work queue): no task, timer or stop flag per
object, so 10,000 idle objects cost a heap entry each; objects are reconciled in the order
they became due; and an object is never reconciled by two workers at once. A wake while its
object is being reconciled runs it again right after.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger("aigw_operator.workqueue")

# Runs one object's step; returns seconds until it is due again (None: only when woken).
Step = Callable[[str], Awaitable[float | None]]


class Wake:
    """Ends one sleep early; a wake while nobody sleeps ends the next sleep at once."""

    def __init__(self) -> None:
        self._pending = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        else:
            self._pending = True

    async def sleep(self, delay: float | None) -> None:
        """Until ``delay`` passes (None: forever) or ``set()``."""
        if self._pending:
            self._pending = False
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = None if delay is None else loop.call_later(max(0.0, delay), _resolve, waiter)
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            self._waiter = None


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class WorkQueue:
    def __init__(self, name: str, step: Step, *, workers: int) -> None:
        self.name = name
        self._step = step
        self._workers = workers
        self._due: dict[str, float] = {}  # key -> loop time it is due; its heap entry is current
        self._heap: list[tuple[float, int, str]] = []  # stale entries are skipped when popped
        self._order = itertools.count()
        self._ready: asyncio.Queue[str | None] = asyncio.Queue()  # None: a worker's signal to end
        self._running: set[str] = set()
        # Loop times: when each running key became due (queued for a worker) and when its step began.
        self._queued_at: dict[str, float] = {}
        self._started_at: dict[str, float] = {}
        self._again: set[str] = set()  # woken while running
        self._forgotten: set[str] = set()  # forgotten while running: not queued again after
        self._wake = Wake()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def schedule(self, key: str, delay: float | None) -> None:
        """Run ``key`` in ``delay`` seconds, or sooner if it is already due sooner (None: no-op)."""
        if delay is None or self._stopping:
            return
        self._forgotten.discard(key)
        if key in self._running and delay <= 0:
            self._again.add(key)
            return
        due = asyncio.get_running_loop().time() + max(0.0, delay)
        current = self._due.get(key)
        if current is not None and current <= due:
            return
        self._due[key] = due
        heapq.heappush(self._heap, (due, next(self._order), key))
        if self._heap[0][2] == key:
            self._wake.set()

    def forget(self, key: str) -> None:
        self._due.pop(key, None)
        self._again.discard(key)
        if key in self._running:
            self._forgotten.add(key)

    def stalled_for(self) -> float:
        """Seconds the most delayed piece of work has been held up: a due object no worker has
        taken (including one the dispatcher failed to hand out), or a step still running. An
        idle queue, whose objects are simply not due, is never stalled."""
        now = asyncio.get_running_loop().time()
        waits = [now - due for key, due in self._queued_at.items() if key not in self._started_at]
        waits += [now - started for started in self._started_at.values()]
        if self._heap:
            waits.append(now - self._heap[0][0])  # a stale head only makes this err towards 0
        return max([0.0, *waits])

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._dispatch(), name=f"{self.name}-dispatcher")]
        self._tasks += [asyncio.create_task(self._work(), name=f"{self.name}-worker-{n}") for n in range(self._workers)]

    async def stop(self, timeout: float) -> None:
        """Take nothing new; let the steps in flight end (an upstream call is never cut off), then cancel."""
        self._stopping = True
        if not self._tasks:
            return
        dispatcher, workers = self._tasks[0], self._tasks[1:]
        dispatcher.cancel()
        while not self._ready.empty():
            key = self._ready.get_nowait()
            if key is not None:
                self._running.discard(key)
        for _ in workers:
            self._ready.put_nowait(None)  # an idle worker wakes to this and ends
        if workers:
            await asyncio.wait(workers, timeout=timeout)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            while self._heap and self._heap[0][0] <= now:
                due, _, key = heapq.heappop(self._heap)
                if self._due.get(key) != due:
                    continue  # rescheduled sooner, or forgotten
                del self._due[key]
                if key in self._running:
                    self._again.add(key)
                else:
                    self._running.add(key)
                    self._queued_at[key] = due
                    self._ready.put_nowait(key)
            await self._wake.sleep(self._heap[0][0] - now if self._heap else None)

    async def _work(self) -> None:
        while True:
            key = await self._ready.get()
            if key is None:
                return
            delay: float | None = None
            self._started_at[key] = asyncio.get_running_loop().time()
            try:
                delay = await self._step(key)
            except Exception:
                # The step handles its own failures; this is a bug, and must not kill the worker.
                logger.exception("%s: step for %s failed", self.name, key)
                delay = 60.0
            finally:
                self._running.discard(key)
                self._queued_at.pop(key, None)
                self._started_at.pop(key, None)
            if key in self._forgotten:
                self._forgotten.discard(key)
                continue
            if key in self._again:
                self._again.discard(key)
                delay = 0.0
            self.schedule(key, delay)
