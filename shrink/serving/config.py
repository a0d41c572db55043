"""What a serving process is told: where the model comes from and how hard to work for each request.

A typed dataclass like the pipeline's sections (``shrink.config``), loaded with
``shrink.config.from_dict``, so a typo in a flag or a YAML ``serve:`` section fails
at start-up with the key named, not as a slow server in production. Every trick
Roblox used (answer cache, dynamic batching, one intra-op thread per worker) has
a switch here, so the load test can measure each with the others held still.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shrink.errors import ShrinkError

ALIAS_SUFFIX = "/production.json"


@dataclass
class ServeConfig:
    """Settings of one ``shrink serve`` process (every worker it starts gets the same).

    Attributes:
        model: A shrink artifact directory (on a cluster KServe's storage
            initializer puts the promoted version at ``/mnt/models``), or the
            registry alias ``s3://<bucket>/[<prefix>/]<model>/production.json``,
            which the server follows: a promotion or a rollback is served
            without a restart.
        name: The model name in the URLs (``/v2/models/<name>/infer``); by
            default the registry's model name, or ``model`` for a directory.
        host: Interface to listen on; ``127.0.0.1`` keeps a local server private.
        port: HTTP port of both protocols, the health checks and ``/metrics``.
        workers: Server processes sharing the port, each with its own model copy.
        intra_op_threads: Threads one model run may use (ONNX Runtime or torch);
            ``None`` keeps the artifact's recorded setting. One thread per
            worker and more workers is what scales on CPUs.
        max_batch_size: Most texts run through the model at once; 1 turns
            batching off. 8 by default: a small INT8 model on one thread runs
            most texts per second at batches of 4 to 8 (the demo's: 1,740 /s
            at 4, 1,700 at 8, 1,300 at 32), and smaller batches wait less.
        model_thread: Run batches on a thread of their own, so the event loop
            parses requests meanwhile; pays only where each worker has a core
            to spare. Off: batches run on the event loop's thread (one thread
            per worker), which is faster on one core (see batching.py).
        max_latency_ms: How long the first text of a batch may wait for
            company. 0 takes only what queued while the model was busy, which
            costs an idle server nothing.
        cache_size: Answers kept (LRU, keyed on the model version and the text
            as the tokenizer normalizes it); 0 turns the cache off.
        poll_seconds: How often the alias is read for a new version.
        retry_failed_seconds: How long a version that failed to download,
            verify or load is left alone before it is tried again.
        download_dir: Where versions named by the alias are downloaded.
        max_text_chars: Longer texts are cut to this many characters before
            tokenizing (the tokenizer keeps far fewer tokens anyway); bounds
            the CPU a single request can take.
        max_request_texts: Most texts one request may carry.
        oos_labels: Labels that mean "out of scope" (CLINC150's ``oos``); the label of the
            artifact's own rejection rule (``shrink.json`` ``extra.oos``) always does.
        oos_threshold: Also flag out of scope when the top score is below this, on top of
            the artifact's rule (the label stays the model's). The rule tuned on
            validation and measured by the benchmark is the one to rely on.
        warmup: Run a few batches through a model before it takes traffic.
        access_log: Log one line per request (KServe's and uvicorn's); off by
            default, it costs throughput.
    """

    model: str
    name: str | None = None
    host: str = "0.0.0.0"
    port: int = 8080
    workers: int = 1
    intra_op_threads: int | None = 1
    max_batch_size: int = 8
    max_latency_ms: float = 0.0
    model_thread: bool = False
    cache_size: int = 10000
    poll_seconds: float = 10.0
    retry_failed_seconds: float = 60.0
    download_dir: str = ".shrink/serving"
    max_text_chars: int = 10000
    max_request_texts: int = 1024
    oos_labels: list[str] = field(default_factory=lambda: ["oos"])
    oos_threshold: float | None = None
    warmup: bool = True
    access_log: bool = False

    @property
    def follows_alias(self) -> bool:
        """Whether the model is the registry alias (polled) rather than a fixed directory."""
        return self.model.startswith("s3://")

    @property
    def model_name(self) -> str:
        """The name clients put in the URL."""
        if self.name:
            return self.name
        if self.follows_alias:
            return self.model[: -len(ALIAS_SUFFIX)].rstrip("/").rsplit("/", 1)[-1]
        return "model"

    def check(self, where: str) -> None:
        """Value rules the types alone cannot express."""
        rules = [
            (bool(self.model.strip()), "model", "must name an artifact directory or an s3://.../production.json alias"),
            (
                not self.follows_alias or self.model.endswith(ALIAS_SUFFIX) and self.model.count("/") >= 4,
                "model",
                f"{self.model!r}: an s3:// model must be the alias s3://<bucket>/<model>/production.json",
            ),
            (
                self.name is None or bool(self.name.strip()) and "/" not in self.name,
                "name",
                "must be a non-empty name without '/'",
            ),
            (0 < self.port < 65536, "port", f"{self.port} is not a TCP port"),
            (self.workers >= 1, "workers", "must be at least 1"),
            (self.intra_op_threads is None or self.intra_op_threads >= 1, "intra_op_threads", "must be at least 1"),
            (self.max_batch_size >= 1, "max_batch_size", "must be at least 1 (1 turns batching off)"),
            (self.max_latency_ms >= 0, "max_latency_ms", "must not be negative"),
            (self.cache_size >= 0, "cache_size", "must not be negative (0 turns the cache off)"),
            (self.poll_seconds > 0, "poll_seconds", "must be positive"),
            (self.retry_failed_seconds >= 0, "retry_failed_seconds", "must not be negative"),
            (self.max_text_chars >= 1, "max_text_chars", "must be at least 1"),
            (self.max_request_texts >= 1, "max_request_texts", "must be at least 1"),
            (self.oos_threshold is None or 0 <= self.oos_threshold <= 1, "oos_threshold", "must be in [0, 1]"),
        ]
        for ok, key, message in rules:
            if not ok:
                raise ShrinkError(f"{where}.{key}: {message}")
