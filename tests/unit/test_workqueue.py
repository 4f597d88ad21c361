"""The work queue that runs every object's loop: order, one step per object at a time, stopping."""

from __future__ import annotations

import asyncio
import itertools

from aigw_operator.engine.workqueue import Wake, WorkQueue
from tests.scrape import Samples, scrape, value


class Recorder:
    """A step that records starts and ends, and returns the delay the test sets per key."""

    def __init__(self, duration: float = 0.0) -> None:
        self.duration = duration
        self.started: list[str] = []
        self.started_at: dict[str, list[float]] = {}  # loop time of each start, per key
        self.ended: list[str] = []
        self.running: set[str] = set()
        self.overlaps: list[str] = []
        self.delays: dict[str, float | None] = {}

    async def __call__(self, key: str) -> float | None:
        if key in self.running:
            self.overlaps.append(key)
        self.running.add(key)
        self.started.append(key)
        self.started_at.setdefault(key, []).append(asyncio.get_running_loop().time())
        try:
            await asyncio.sleep(self.duration)
        finally:
            self.running.discard(key)
        self.ended.append(key)
        return self.delays.get(key)


async def eventually(condition: object, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_objects_run_in_the_order_they_became_due() -> None:
    step = Recorder(duration=0.01)
    queue = WorkQueue("test", step, workers=1)
    queue.start()
    for key in ["c", "a", "b"]:
        queue.schedule(key, 0.0)
    queue.schedule("later", 0.2)
    queue.schedule("sooner", 0.1)
    await eventually(lambda: len(step.ended) == 5)
    assert step.started == ["c", "a", "b", "sooner", "later"]
    await queue.stop(timeout=1.0)


async def test_the_step_delay_requeues_and_none_waits_for_a_wake() -> None:
    delay = 0.05
    step = Recorder()
    step.delays = {"poll": delay, "idle": None}
    queue = WorkQueue("test", step, workers=2)
    queue.start()
    queue.schedule("poll", 0.0)
    queue.schedule("idle", 0.0)
    # Counts and gaps, not a count within a fixed sleep (which a busy machine shrinks): the
    # delay requeues (fails if it does not: "poll" never reaches 5 runs), never sooner than the
    # delay (fails if the delay is ignored or shortened: gaps near 0), while None never requeues
    # ("idle" ran once over at least four delays). Load only lengthens gaps and the timeout is
    # 100 delays, so neither bound can trip on a slow machine. The 10% margin is for timer
    # granularity: asyncio may fire a timer up to its clock resolution early.
    await eventually(lambda: step.started.count("poll") >= 5, timeout=100 * delay)
    starts = step.started_at["poll"]
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert min(gaps) >= 0.9 * delay, gaps
    assert step.started.count("idle") == 1
    queue.schedule("idle", 0.0)  # a change of the resource wakes it
    await eventually(lambda: step.started.count("idle") == 2)
    queue.forget("poll")
    await asyncio.sleep(0.1)
    count = step.started.count("poll")
    await asyncio.sleep(0.2)
    assert step.started.count("poll") == count
    await queue.stop(timeout=1.0)


async def test_an_object_forgotten_while_it_runs_is_not_queued_again() -> None:
    step = Recorder(duration=0.1)
    step.delays = {"gone": 0.01}
    queue = WorkQueue("test", step, workers=1)
    queue.start()
    queue.schedule("gone", 0.0)
    await eventually(lambda: step.running == {"gone"})
    queue.forget("gone")  # deleted while its step runs
    await asyncio.sleep(0.3)
    assert step.started == ["gone"]
    queue.schedule("gone", 0.0)  # seen again (a new event): runs again
    await eventually(lambda: step.started == ["gone", "gone"])
    await queue.stop(timeout=1.0)


async def test_an_object_is_never_run_twice_at_once_and_a_wake_while_running_runs_it_again() -> None:
    step = Recorder(duration=0.1)
    step.delays = {"x": None}
    queue = WorkQueue("test", step, workers=4)
    queue.start()
    queue.schedule("x", 0.0)
    await eventually(lambda: step.running == {"x"})
    for _ in range(5):
        queue.schedule("x", 0.0)  # woken again and again while it runs
    await eventually(lambda: len(step.ended) == 2)
    await asyncio.sleep(0.15)
    assert step.overlaps == []
    assert step.started == ["x", "x"]  # the wakes fold into one more run, after the first
    await queue.stop(timeout=1.0)


async def test_a_sooner_schedule_wins_and_a_later_one_does_not_postpone() -> None:
    step = Recorder()
    queue = WorkQueue("test", step, workers=1)
    queue.start()
    queue.schedule("x", 10.0)
    queue.schedule("x", 0.05)
    await eventually(lambda: step.started == ["x"], timeout=1.0)
    queue.schedule("y", 0.05)
    queue.schedule("y", 10.0)
    await eventually(lambda: step.started == ["x", "y"], timeout=1.0)
    await queue.stop(timeout=1.0)


async def test_stop_lets_the_step_in_flight_finish_and_starts_nothing_new() -> None:
    step = Recorder(duration=0.2)
    queue = WorkQueue("test", step, workers=1)
    queue.start()
    queue.schedule("busy", 0.0)
    queue.schedule("waiting", 0.0)
    await eventually(lambda: step.running == {"busy"})
    await queue.stop(timeout=5.0)
    assert step.ended == ["busy"]  # not cut off in the middle
    assert "waiting" not in step.started
    queue.schedule("new", 0.0)
    await asyncio.sleep(0.05)
    assert "new" not in step.started


async def test_stop_cancels_a_step_that_outlives_the_timeout() -> None:
    step = Recorder(duration=5.0)
    queue = WorkQueue("test", step, workers=1)
    queue.start()
    queue.schedule("stuck", 0.0)
    await eventually(lambda: step.running == {"stuck"})
    started = asyncio.get_running_loop().time()
    await queue.stop(timeout=0.1)
    assert asyncio.get_running_loop().time() - started < 1.0
    assert step.ended == []


async def test_a_failing_step_does_not_kill_its_worker() -> None:
    calls: list[str] = []

    async def step(key: str) -> float | None:
        calls.append(key)
        if key == "bad":
            raise RuntimeError("bug")
        return None

    queue = WorkQueue("test", step, workers=1)
    queue.start()
    queue.schedule("bad", 0.0)
    queue.schedule("good", 0.0)
    await eventually(lambda: calls == ["bad", "good"])
    await queue.stop(timeout=1.0)


async def test_wake_ends_a_sleep_early_and_is_kept_when_nobody_sleeps() -> None:
    wake = Wake()
    loop = asyncio.get_running_loop()
    started = loop.time()
    loop.call_later(0.05, wake.set)
    await wake.sleep(5.0)
    assert loop.time() - started < 1.0
    wake.set()  # nobody sleeping: the next sleep returns at once
    started = loop.time()
    await wake.sleep(5.0)
    assert loop.time() - started < 0.1
    started = loop.time()
    await wake.sleep(0.05)
    assert loop.time() - started >= 0.04


class Held:
    """A step that waits for ``release`` on the keys it holds, and returns None."""

    def __init__(self, held: set[str]) -> None:
        self.held = held
        self.release = asyncio.Event()
        self.started: list[str] = []
        self.ended: list[str] = []

    async def __call__(self, key: str) -> float | None:
        self.started.append(key)
        if key in self.held:
            await self.release.wait()
        self.ended.append(key)
        return None


async def test_the_queue_exports_client_go_work_queue_metrics_over_http() -> None:
    """controller-runtime's workqueue_* series for this queue (its lowercase name), read over HTTP."""
    step = Held({"a"})
    queue = WorkQueue("MeteredQueue", step, workers=1)
    labels = {"name": "meteredqueue", "controller": "meteredqueue"}
    before = await scrape()
    assert ("workqueue_depth", tuple(sorted(labels.items()))) not in before  # no series before it runs

    def grew(samples: Samples, metric: str) -> float:
        return value(samples, metric, **labels) - value(before, metric, **labels)

    queue.start()
    queue.schedule("a", 0.0)
    await eventually(lambda: step.started == ["a"])
    queue.schedule("b", 0.0)
    queue.schedule("c", 0.0)
    queue.schedule("later", 30.0)  # a delayed add: client-go's retry; not due, so not in the depth
    queue.schedule("a", 0.0)  # woken while it runs: once more, after
    hold = 0.3
    await asyncio.sleep(hold)
    busy = await scrape()
    assert value(busy, "workqueue_depth", **labels) == 2  # b and c wait for the one worker
    assert grew(busy, "workqueue_adds_total") == 3
    assert grew(busy, "workqueue_retries_total") == 1
    assert grew(busy, "workqueue_queue_duration_seconds_count") == 1  # only a was taken
    assert grew(busy, "workqueue_work_duration_seconds_count") == 0  # and it has not finished
    longest = value(busy, "workqueue_longest_running_processor_seconds", **labels)
    assert hold <= longest < 10
    assert value(busy, "workqueue_unfinished_work_seconds", **labels) == longest  # one step runs

    step.release.set()
    await eventually(lambda: len(step.ended) == 4)
    assert step.started == ["a", "b", "c", "a"]
    idle = await scrape()
    assert value(idle, "workqueue_depth", **labels) == 0
    assert value(idle, "workqueue_unfinished_work_seconds", **labels) == 0
    assert value(idle, "workqueue_longest_running_processor_seconds", **labels) == 0
    assert grew(idle, "workqueue_adds_total") == 4
    assert grew(idle, "workqueue_work_duration_seconds_count") == 4
    assert grew(idle, "workqueue_queue_duration_seconds_count") == 4
    # b, c and the second a each waited out a's first step: from when they were due, not from
    # when a worker could take them.
    assert grew(idle, "workqueue_queue_duration_seconds_sum") >= 3 * hold
    assert grew(idle, "workqueue_work_duration_seconds_sum") >= hold

    await queue.stop(timeout=1.0)
    stopped = await scrape()
    for gauge in (
        "workqueue_depth",
        "workqueue_unfinished_work_seconds",
        "workqueue_longest_running_processor_seconds",
    ):
        assert (gauge, tuple(sorted(labels.items()))) not in stopped, gauge
