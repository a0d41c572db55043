"""The version being served, and the hot swap to the next one.

A new version is downloaded, verified, loaded and warmed on a background
thread while the current one keeps answering; only then is it swapped in, by
rebinding one attribute (atomic under the GIL). Batches already running keep
their reference to the old model and finish on it; every batch after the swap
runs on the new one, and each response names the version that answered it.

A version that fails anywhere on that path (the alias unreadable, a file
missing or tampered, a model that does not load or answer) leaves the current
one serving; the failure is logged and counted, and that version is not tried
again for ``retry_failed_seconds``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from shrink.errors import ShrinkError
from shrink.logs import log
from shrink.serving.answers import LoadedModel, ModelVersion, log_loaded
from shrink.serving.config import ServeConfig


class ModelHolder:
    """Holds the serving :class:`LoadedModel` and follows its source.

    Args:
        source: A ``DirectorySource`` or ``AliasSource``.
        cfg: Threads, warm-up and labels of the loaded models; poll and retry intervals.
        on_swap: Called with (new, old or None) after each swap.
        on_failure: Called with (stage, version or None, one-line reason) after each failure;
            ``stage`` is ``alias``, ``fetch`` or ``load``.
    """

    def __init__(
        self,
        source,
        cfg: ServeConfig,
        on_swap: Callable[[LoadedModel, LoadedModel | None], None] | None = None,
        on_failure: Callable[[str, ModelVersion | None, str], None] | None = None,
    ):
        self.source = source
        self.cfg = cfg
        self.current: LoadedModel | None = None
        self.previous_version: str | None = None
        self._on_swap = on_swap or (lambda new, old: None)
        self._on_failure = on_failure or (lambda stage, version, reason: None)
        self._failed: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()  # one refresh at a time (the thread, or a caller)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _fail(self, stage: str, version: ModelVersion | None, reason: str) -> None:
        keeps = f"; still serving {self.current.version.version}" if self.current else "; nothing is served yet"
        log.error(
            "serve: %s %s failed: %s%s", stage, version.version if version else self.source.describe(), reason, keeps
        )
        if version is not None:
            self._failed[(version.version, version.content_hash)] = time.monotonic()
        self._on_failure(stage, version, reason)

    def refresh(self) -> bool:
        """Look at the source once; load and swap in what it names if that is new. True when swapped."""
        with self._lock:
            try:
                wanted = self.source.check()
            except ShrinkError as exc:
                self._fail("alias", None, str(exc))
                return False
            if wanted is None:
                return False
            current = self.current.version if self.current else None
            if current is not None and (wanted.version, wanted.content_hash) == (current.version, current.content_hash):
                return False
            failed_at = self._failed.get((wanted.version, wanted.content_hash))
            if failed_at is not None and time.monotonic() - failed_at < self.cfg.retry_failed_seconds:
                return False
            stage = "fetch"
            try:
                directory, got = self.source.fetch(wanted)
                stage = "load"
                model = LoadedModel(
                    directory,
                    got,
                    threads=self.cfg.intra_op_threads,
                    oos_labels=tuple(self.cfg.oos_labels),
                    oos_threshold=self.cfg.oos_threshold,
                    max_batch_size=self.cfg.max_batch_size,
                    warmup=self.cfg.warmup,
                )
            except ShrinkError as exc:
                self._fail(stage, wanted, str(exc))
                return False
            except Exception as exc:  # noqa: BLE001 - a bug or a runtime's own error: keep serving, say so
                log.exception("serve: unexpected error while loading %s", wanted.version)
                self._fail(stage, wanted, f"{type(exc).__name__}: {exc}".splitlines()[0])
                return False
            old = self.current
            self.current = model  # the swap: batches that start from now on use the new version
            self.previous_version = old.version.version if old else None
            log_loaded(model)
            if old is not None:
                log.info("serve: swapped %s -> %s", old.version.version, model.version.version)
            self.source.retain({v for v in (model.version.version, self.previous_version) if v})
            self._on_swap(model, old)
            return True

    def follow(self) -> None:
        """Poll the source every ``poll_seconds`` on a daemon thread (only sources that can change)."""
        if not self.source.follows or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="shrink-follow", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.cfg.poll_seconds):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - the follower must outlive any one bad poll
                log.exception("serve: polling %s failed", self.source.describe())

    def stop(self) -> None:
        """Stop following (the current model keeps its memory until the process ends)."""
        self._stop.set()
