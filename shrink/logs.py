"""Logging and progress that read well both in a terminal and in the KFP UI's log pane.

Interactive terminals get tqdm bars; logs (KFP pods, CI) get a plain line every
few seconds instead, because a bar redrawn with carriage returns becomes
thousands of lines in a log viewer.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("shrink")


class _CurrentStderr(logging.StreamHandler):
    """A handler on whatever ``sys.stderr`` is when a line is logged, not when the handler was made.

    A stream bound once goes stale when stderr is replaced (pytest's capture, a console that
    redirects it) and logging then prints "--- Logging error ---" with a traceback instead of the line.
    """

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(level: int = logging.INFO) -> None:
    """Log lines with a timestamp on stderr, where KFP collects them."""
    if not log.handlers:
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


def interactive() -> bool:
    """Whether a person is watching a terminal (bars) or a log is being written (lines)."""
    return sys.stderr.isatty()


def progress(items: Iterable[T], desc: str, total: int | None = None, every_s: float = 10.0) -> Iterator[T]:
    """Iterate with a tqdm bar on a terminal, or a log line every ``every_s`` seconds otherwise."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if interactive():
        from tqdm.auto import tqdm

        yield from tqdm(items, desc=desc, total=total, leave=False)
        return
    start = last = time.monotonic()
    for i, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if now - last >= every_s:
            rate = i / (now - start)
            of = f"/{total}" if total else ""
            eta = f", ~{(total - i) / rate:.0f}s left" if total and rate > 0 else ""
            log.info("%s: %d%s (%.1f/s%s)", desc, i, of, rate, eta)
            last = now
