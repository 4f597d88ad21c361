"""The one backoff policy: capped exponential growth, with jitter that never reaches zero."""

from __future__ import annotations

import random


def backoff(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait after ``attempt`` + 1 consecutive failures: uniform in [d/2, d], with
    d = min(cap, base * 2**attempt). Half the delay is kept, so that a storm of retries still
    thins out; the other half spreads them apart."""
    delay = min(cap, base * 2.0 ** min(attempt, 62))
    return random.uniform(delay / 2, delay)
