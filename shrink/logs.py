"""Logging and progress that read well both in a terminal and in the KFP UI's log pane.

Interactive terminals get tqdm bars; logs (KFP pods, CI) get a plain line every
few seconds instead, because a bar redrawn with carriage returns becomes
thousands of lines in a log viewer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from shrink.errors import ShrinkError

T = TypeVar("T")
log = logging.getLogger("shrink")


def setup_logging(level: int = logging.INFO) -> None:
    """Log lines with a timestamp on stderr, where KFP collects them."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
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


@contextlib.contextmanager
def component_main(step: str, *metrics_outputs: Any) -> Iterator[None]:
    """Wrap a KFP component body: log setup, and expected errors as one line and exit code 1.

    ``metrics_outputs`` (KFP Metrics / ClassificationMetrics artifacts) are also written to
    their paths as JSON on success. KFP keeps metrics in the executor output, not in a file,
    and kfp.local's cache treats an output whose file is missing as a cache miss: without
    this, no step with metrics would ever be reused by a second local run.
    """
    setup_logging()
    log.info("step %s starting", step)
    start = time.monotonic()
    try:
        yield
    except ShrinkError as exc:
        log.error("%s failed: %s", step, exc)
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    for artifact in metrics_outputs:
        path = Path(artifact.path)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(artifact.metadata, indent=2, sort_keys=True, default=str))
    log.info("step %s done in %.1fs", step, time.monotonic() - start)


def publish_model(meta: Any, model_output: Any, metrics_output: Any) -> None:
    """Show a sealed artifact in the KFP UI: its identity on the Model output, its numbers as Metrics.

    Duck-typed on KFP's artifacts (``.metadata``, ``.log_metric``) so ``shrink`` stays free of KFP.
    """
    model_output.metadata.update(
        {
            "format": meta.format,
            "precision": meta.precision,
            "technique": meta.technique,
            "content_hash": meta.content_hash(),
        }
    )
    for name, value in meta.metrics.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            metrics_output.log_metric(name, value)
