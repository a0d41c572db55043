"""The glue between a KFP component body and the library: one-line errors, metrics files, artifact metadata.

Duck-typed on KFP's artifacts (``.path``, ``.metadata``, ``.log_metric``) so that ``shrink``
never imports KFP: the components are the only code that does.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shrink.errors import ShrinkError, TransientError
from shrink.logs import log, setup_logging

# Exit codes, so that a log reader or a cluster's retry rule can tell the kinds apart:
# 1 is Python's own for an uncaught exception (a bug, with its traceback).
EXIT_EXPECTED = 3  # a ShrinkError: bad input or state; the same input fails the same way, never retried
EXIT_TRANSIENT = 75  # a TransientError after the step's own retries (EX_TEMPFAIL): a later run may succeed


@contextlib.contextmanager
def component_main(step: str, *metrics_outputs: Any) -> Iterator[None]:
    """Wrap a KFP component body: log setup, and expected errors as one ``error:`` line and a distinct exit code.

    Transient errors (store, hub) are retried where they happen (``shrink.transient``), for
    the budget the pipeline sets on the step; what reaches here has failed for good.

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
        raise SystemExit(EXIT_TRANSIENT if isinstance(exc, TransientError) else EXIT_EXPECTED) from None
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
