"""The operator's /metrics, read over HTTP as Prometheus scrapes it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from aigw_operator.base import metrics

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape() -> Samples:
    port = metrics.serve(0)  # the process's server: started once, by the first caller
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{port}/metrics")
    response.raise_for_status()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, metric: str, /, **labels: str) -> float:
    """The series with exactly these labels (0 when there is none)."""
    return samples.get((metric, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, metric: str, /, **labels: str) -> float:
    """The sum over the series that have these labels, whatever their others."""
    return sum(
        found for (name, pairs), found in samples.items() if name == metric and labels.items() <= dict(pairs).items()
    )


def series(samples: Samples, metric: str) -> list[dict[str, str]]:
    return [dict(pairs) for name, pairs in samples if name == metric]


async def until(check: Callable[[Samples], bool], timeout: float = 10.0) -> Samples:
    """Scrape until ``check`` holds, or ``timeout`` passes: the samples last scraped, for the
    caller's own asserts to show what they found. The gauges follow watch events, which lag
    the API a little."""
    deadline = time.monotonic() + timeout
    while True:
        samples = await scrape()
        if check(samples) or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.05)
