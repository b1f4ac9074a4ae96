"""Retry with exponential backoff, for transient transport faults only.

Airflow task retries are the main mechanism; this helper is for short in-task retries (a
collector listing three gateways should not fail its whole run on one refused connection).
Permanent errors (host key mismatch, conflict, refused key) are raised at once.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from flows.transport.errors import TransientError

T = TypeVar("T")
log = logging.getLogger(__name__)


def with_backoff(
    fn: Callable[[], T],
    *,
    attempts: int = 5,
    base_delay: float = 1.0,
    factor: float = 2.0,
    max_delay: float = 60.0,
    jitter: float = 0.1,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> T:
    """Call fn until it succeeds; on TransientError wait base_delay * factor**n (capped, with jitter)."""
    if attempts < 1:
        raise ValueError("attempts doit être au moins 1")
    rng = rng or random.Random()  # noqa: S311 - jitter, not security
    for n in range(attempts):
        try:
            return fn()
        except TransientError as exc:
            if n == attempts - 1:
                raise
            delay = min(max_delay, base_delay * factor**n)
            delay *= 1 + rng.uniform(-jitter, jitter)
            log.warning("erreur transitoire (%s) : essai %d/%d, nouvel essai dans %.1f s", exc, n + 1, attempts, delay)
            sleep(delay)
    raise AssertionError("unreachable")
