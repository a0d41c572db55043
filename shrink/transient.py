"""Retry what a retry can cure (a store or hub that did not answer), inside the step, and nothing else.

Why here and not in KFP's task retry policy: that policy cannot look at why a task failed,
so it repeated deterministic errors too (a label mismatch was retried three times with
30 + 60 + 120 s of backoff before the user saw it). The step knows: a ``TransientError``
is retried with backoff for up to ``SHRINK_TRANSIENT_RETRY_S`` seconds (the pipeline sets it
on the steps the catalog marks ``retried``; unset, as on the CLI, it is not retried beyond
botocore's own quick retries, so a store that is down is reported at once).
"""

from __future__ import annotations

import contextvars
import os
import time
from collections.abc import Callable
from typing import TypeVar

from shrink.errors import TransientError
from shrink.logs import log

T = TypeVar("T")
BUDGET_ENV = "SHRINK_TRANSIENT_RETRY_S"
# Set while a retrying() call runs: nested calls (a download that reads a manifest) run once, so the
# outermost one owns the budget instead of each level multiplying it.
_ACTIVE: contextvars.ContextVar[bool] = contextvars.ContextVar("shrink_transient_active", default=False)


def budget_s() -> float:
    """Seconds a step may spend retrying transient errors (0 when not set or not a number)."""
    try:
        return max(0.0, float(os.environ.get(BUDGET_ENV, "0")))
    except ValueError:
        return 0.0


def retrying(
    call: Callable[[], T],
    what: str,
    budget: float | None = None,
    first: float = 2.0,
    factor: float = 2.0,
    cap: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()``, repeated with exponential backoff while it raises ``TransientError`` and time is left.

    ``call`` must be idempotent (one S3 request, a whole upload whose manifest is written last).
    Any other exception, ``ShrinkError`` included, is raised at once.
    """
    if _ACTIVE.get():
        return call()
    token = _ACTIVE.set(True)
    try:
        return _retry(call, what, budget_s() if budget is None else budget, first, factor, cap, sleep)
    finally:
        _ACTIVE.reset(token)


def _retry(call, what, budget, first, factor, cap, sleep):
    deadline = time.monotonic() + budget
    delay = first
    attempt = 1
    while True:
        try:
            return call()
        except TransientError as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            wait = min(delay, cap, left)
            log.warning("%s: %s; retry %d in %.0fs", what, exc, attempt, wait)
            sleep(wait)
            delay *= factor
            attempt += 1
