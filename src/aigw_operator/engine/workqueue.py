"""When each object's loop runs next, and a fixed pool of workers that runs it.

One due time per object in a heap, one dispatcher that sleeps until the earliest, and a few
workers per kind (as controller-runtime's work queue): no task, timer or stop flag per
object, so 10,000 idle objects cost a heap entry each; objects are reconciled in the order
they became due; and an object is never reconciled by two workers at once. A wake while its
object is being reconciled runs it again right after.

It exports client-go's work-queue metrics, as controller-runtime's queue does: an add is an
object becoming due (handed to the workers), a retry a schedule with a delay, the queue
duration from due to a worker's start, the work duration one step.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable

from aigw_operator.base import metrics

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
        # When each running key became due (queued for a worker; loop time) and when its step
        # began (time.monotonic(), the loop's clock too: the metrics read it from their thread).
        self._queued_at: dict[str, float] = {}
        self._started_at: dict[str, float] = {}
        self._again: dict[str, float] = {}  # woken while running: since when (loop time)
        self._forgotten: set[str] = set()  # forgotten while running: not queued again after
        self._waiting = 0  # keys handed to the workers and not taken yet
        self._wake = Wake()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._metrics = metrics.queue_metrics(name)
        self._untrack: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def schedule(self, key: str, delay: float | None) -> None:
        """Run ``key`` in ``delay`` seconds, or sooner if it is already due sooner (None: no-op)."""
        if delay is None or self._stopping:
            return
        self._forgotten.discard(key)
        now = asyncio.get_running_loop().time()
        if delay > 0:
            self._metrics.retries.inc()
        elif key in self._running:
            self._again.setdefault(key, now)
            return
        self._push(key, now + max(0.0, delay))

    def _push(self, key: str, due: float) -> None:
        current = self._due.get(key)
        if current is not None and current <= due:
            return
        self._due[key] = due
        heapq.heappush(self._heap, (due, next(self._order), key))
        if self._heap[0][2] == key:
            self._wake.set()

    def forget(self, key: str) -> None:
        self._due.pop(key, None)
        self._again.pop(key, None)
        if key in self._running:
            self._forgotten.add(key)

    def stalled_for(self) -> float:
        """Seconds the most delayed piece of work has been held up: a due object no worker has
        taken (including one the dispatcher failed to hand out), or a step still running. An
        idle queue, whose objects are simply not due, is never stalled."""
        now = asyncio.get_running_loop().time()
        waits = [now - due for key, due in self._queued_at.items() if key not in self._started_at]
        waits += self.running_seconds()
        if self._heap:
            waits.append(now - self._heap[0][0])  # a stale head only makes this err towards 0
        return max([0.0, *waits])

    def active(self) -> bool:
        """Whether the queue's event loop runs (a crashed one does no work, and is not counted)."""
        return self._loop is not None and self._loop.is_running()

    def depth(self) -> int:
        """Keys due and waiting for a worker (workqueue_depth)."""
        return self._waiting

    def running_seconds(self) -> list[float]:
        """How long each step in progress has run; safe to call from another thread."""
        now = time.monotonic()
        return [now - started for started in list(self._started_at.values())]

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tasks = [asyncio.create_task(self._dispatch(), name=f"{self.name}-dispatcher")]
        self._tasks += [asyncio.create_task(self._work(), name=f"{self.name}-worker-{n}") for n in range(self._workers)]
        self._untrack = metrics.QUEUES.queues.track(self)

    async def stop(self, timeout: float) -> None:
        """Take nothing new; let the steps in flight end (an upstream call is never cut off), then cancel."""
        self._stopping = True
        if self._untrack is not None:
            self._untrack()
        if not self._tasks:
            return
        dispatcher, workers = self._tasks[0], self._tasks[1:]
        dispatcher.cancel()
        while not self._ready.empty():
            key = self._ready.get_nowait()
            if key is not None:
                self._running.discard(key)
                self._waiting -= 1
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
                    self._again.setdefault(key, due)
                else:
                    self._running.add(key)
                    self._queued_at[key] = due
                    self._waiting += 1
                    self._metrics.adds.inc()
                    self._ready.put_nowait(key)
            await self._wake.sleep(self._heap[0][0] - now if self._heap else None)

    async def _work(self) -> None:
        while True:
            key = await self._ready.get()
            if key is None:
                return
            self._waiting -= 1
            delay: float | None = None
            loop = asyncio.get_running_loop()
            self._metrics.queue_seconds.observe(max(0.0, loop.time() - self._queued_at[key]))
            started = self._started_at[key] = time.monotonic()
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
                self._metrics.work_seconds.observe(time.monotonic() - started)
            if key in self._forgotten:
                self._forgotten.discard(key)
                continue
            woken = self._again.pop(key, None)
            if woken is not None:
                if not self._stopping:
                    self._push(key, woken)  # due since it was woken: its wait counts from then
                continue
            self.schedule(key, delay)
