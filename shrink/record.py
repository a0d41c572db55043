"""The benchmark record: the one document a candidate's measurements travel in.

:mod:`shrink.benchmark` writes it (``benchmark.json``, schema ``shrink.benchmark/v1``); the
gate judges on it, the report and the model card show it, promotion stores it beside the
model, and the champion's re-measurement is one too. This module owns its shape, its
validation and every way it is read, so a field that is added or renamed changes here.

The record stays a plain JSON object, typed with ``TypedDict`` rather than a dataclass: it
is stored (registry versions, the decision, the golden run) and read back by older and
newer code, so what is read must be exactly what was written, extra keys included (the
champion's ``production`` section, a field a later version adds, a record from before
``per_class_support``). A TypedDict is that dict with its keys spelled out for readers and
type checkers; nothing converts it on the way in or out, so a JSON round trip is exact.

Two stand-ins share the ``candidate`` key: an *error record* (``{"candidate", "error"}``)
for a result that is missing or unreadable, which the gate shows as invalid instead of
stopping, and the champion step's *absent record* (``{"candidate", "absent"}``) when
nothing is in production.

Metrics are read through :data:`shrink.slo.METRICS`, the registry of where each one lives.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from shrink.slo import METRICS, Goal

SCHEMA = "shrink.benchmark/v1"
# The record's file name where a directory holds it (a registry version, a benchmark output folder).
FILE = "benchmark.json"


class ArtifactRef(TypedDict):
    """The measured artifact: what it is and its content hash (the gate and promotion match on it)."""

    technique: str
    format: str
    precision: str
    content_hash: str
    uri: str | None
    lineage: list[dict[str, Any]]


class DatasetRef(TypedDict):
    """The evaluated examples; records are compared only on the same fingerprint."""

    split: str
    examples: int
    fingerprint: str
    has_oos: bool


# The figures kept for the model without its oos rule (``accuracy.raw``).
RAW_FIGURES = ("accuracy", "in_scope_accuracy", "oos_recall", "oos_precision", "macro_f1")


class RawAccuracy(TypedDict):
    """The same figures for the bare argmax, the model without its out-of-scope rule."""

    accuracy: float
    in_scope_accuracy: float | None
    oos_recall: float | None
    oos_precision: float | None
    macro_f1: float


class Accuracy(TypedDict):
    """:func:`shrink.metrics.accuracy_report`: fractions in [0, 1]; the ``oos`` figures None without ``oos``.

    With the artifact's out-of-scope rule applied (what serves); ``raw`` without it.
    """

    accuracy: float
    in_scope_accuracy: float | None
    oos_recall: float | None
    oos_precision: float | None
    macro_f1: float
    per_class: dict[str, float | None]  # None: the class has no test example
    per_class_support: NotRequired[dict[str, int]]  # absent in records written before it
    majority_fraction: float
    raw: NotRequired[RawAccuracy]  # absent in records written before the oos rule


class Latency(TypedDict):
    """Batch-1 request latency in ms, pooled over ``rounds`` fresh worker processes."""

    p50: float
    p95: float
    p99: float
    mean: float
    std: float
    samples: int
    p50_ci95: list[float]
    p95_ci95: list[float]
    model_p50: float
    model_p95: float
    warmup: int
    rounds: int
    round_p50: list[float]
    round_spread: float


class Size(TypedDict):
    """Weight files on disk (MB of 2**20 bytes), the whole artifact, and stored parameter counts."""

    model_bytes: int
    model_mb: float
    artifact_bytes: int
    parameters: int
    nonzero_parameters: int


class Memory(TypedDict):
    """Peak resident memory of the worker process serving batch 1."""

    peak_rss_mb: float


class Threads(TypedDict):
    """The thread counts the model was timed with, and the cores it was pinned to."""

    intra_op: int
    inter_op: int
    pinned_cpus: list[int] | None


class Cost(TypedDict):
    """Serving capacity per core and what a million requests cost at the configured price."""

    qps_per_core: float
    usd_per_million: float
    instance_type: str
    instance_price_per_hour: float


class BenchmarkRecord(TypedDict):
    """One candidate measured: the ``shrink.benchmark/v1`` document, as written to ``benchmark.json``."""

    schema: str
    candidate: str
    artifact: ArtifactRef
    label_names: list[str]
    dataset: DatasetRef
    accuracy: Accuracy
    latency_ms: Latency
    throughput_qps: dict[str, float]  # batch size (a string: JSON keys) -> requests per second
    size: Size
    memory: Memory
    load_time_s: float
    threads: Threads
    hardware: dict[str, Any]  # shrink.hardware.hardware_info; comparisons use its fingerprint
    cost: Cost
    created: str
    duration_s: float
    production: NotRequired[dict[str, Any]]  # the champion's: the alias version it was fetched from
    oos: NotRequired[dict[str, Any] | None]  # the artifact's oos rule (shrink.oos.OosRule), None: no rule


class ErrorRecord(TypedDict):
    """Stands for a benchmark result that is missing or unreadable: the candidate is invalid, not fatal."""

    candidate: str
    error: str


class AbsentRecord(TypedDict):
    """The champion step's result when there is no champion to measure."""

    candidate: str
    absent: str


Record = BenchmarkRecord | ErrorRecord | AbsentRecord

# Fields the gate cannot judge without, and the rule each value must meet.
_REQUIRED = {
    ("accuracy", "accuracy"): "fraction",
    ("accuracy", "majority_fraction"): "fraction",
    ("latency_ms", "p50"): "positive",
    ("latency_ms", "p95"): "positive",
    ("size", "model_mb"): "nonnegative",
}
_IDENTITIES = (("hardware", "fingerprint"), ("dataset", "fingerprint"), ("artifact", "content_hash"))


def is_number(x: Any) -> bool:
    """A finite int or float, and not a bool (JSON ``true`` is no measurement)."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def lookup(record: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path`` (``("latency_ms", "p95")``), or None where any part is missing."""
    value: Any = record
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def record_problems(record: Any) -> list[str]:
    """Why a benchmark record cannot be trusted (empty when it can)."""
    if not isinstance(record, dict):
        return [f"benchmark record is not a JSON object ({type(record).__name__})"]
    if record.get("error"):
        return [str(record["error"])]
    if record.get("schema") != SCHEMA:
        return [f"schema is {record.get('schema')!r}, expected {SCHEMA!r}"]
    problems = []
    for path, rule in _REQUIRED.items():
        value = lookup(record, path)
        name = ".".join(path)
        if value is None:
            problems.append(f"{name} is missing")
        elif not is_number(value):
            problems.append(f"{name} is not a finite number ({value!r})")
        elif rule == "fraction" and not 0 <= value <= 1:
            problems.append(f"{name} = {value} is outside [0, 1]")
        elif rule == "positive" and value <= 0:
            problems.append(f"{name} = {value} must be > 0")
        elif rule == "nonnegative" and value < 0:
            problems.append(f"{name} = {value} must be >= 0")
    if not isinstance(lookup(record, ("accuracy", "per_class")), dict):
        problems.append("accuracy.per_class is missing")
    for path in _IDENTITIES:
        if not isinstance(lookup(record, path), str) or not lookup(record, path):
            problems.append(f"{'.'.join(path)} is missing")
    if not isinstance(record.get("label_names"), list) or not record.get("label_names"):
        problems.append("label_names is missing")
    return problems


def error_record(candidate: str, error: str) -> ErrorRecord:
    """The stand-in for a result that could not be read; ``error`` names the file and what is wrong."""
    return {"candidate": candidate, "error": error}


def read_record(path: str | Path, candidate: str, per_trial: bool = False) -> Record:
    """Read the record wired as ``candidate`` from a file, or from ``benchmark.json`` in a directory.

    Never raises: an unreadable result must not stop the gate, it only makes that candidate
    unpromotable (an unreadable champion record: the decision says so and the stored record
    is used), so it comes back as an error record naming the file. So does a record of
    another candidate than the one it is wired as. A record without a name takes ``candidate``.
    ``per_trial``: one of a list wired as ``candidate`` (the shape search), whose own name must
    be ``<candidate>@<trial label>``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / FILE
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        return error_record(candidate, f"{path}: benchmark result unreadable: {exc}")
    if per_trial:
        if not str(record.get("candidate", "")).startswith(f"{candidate}@"):
            return error_record(candidate, f"{path}: result is for {record.get('candidate')!r}, wired as {candidate!r}")
        return record
    if record.get("candidate") not in (None, candidate):
        return error_record(candidate, f"{path}: result is for {record.get('candidate')!r}, wired as {candidate!r}")
    record.setdefault("candidate", candidate)
    return record


def write_record(record: Record, path: str | Path) -> Path:
    """Write a record as JSON (the benchmark component's ``result`` file), creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))
    return path


def metric_value(record: Record, goal_or_metric: Goal | str) -> Any:
    """The value a goal is checked on: a number, a {label: fraction} mapping, or None when not measured."""
    metric = goal_or_metric.metric if isinstance(goal_or_metric, Goal) else goal_or_metric
    batch = goal_or_metric.batch_size if isinstance(goal_or_metric, Goal) else None
    spec = METRICS[metric]
    value = lookup(record, spec.path)
    if metric == "throughput_qps":
        if not isinstance(value, dict) or not value:
            return None
        if batch is not None:
            value = value.get(str(batch))
        else:
            numbers = [v for v in value.values() if is_number(v)]
            value = max(numbers) if numbers else None
    if spec.per_class:
        # None marks a class absent from the evaluated test examples: nothing to compare for it.
        if not isinstance(value, dict) or not all(v is None or is_number(v) for v in value.values()):
            return None
        return {label: v for label, v in value.items() if v is not None}
    return value if is_number(value) else None


def summarize(record: Record, baseline: Record | None) -> dict[str, Any]:
    """The few figures a table shows, with speed-up and size reduction against the baseline."""
    qps = record.get("throughput_qps") if isinstance(record.get("throughput_qps"), dict) else {}
    numeric = all(is_number(v) for v in qps.values())
    best_batch = max(qps, key=lambda k: qps[k], default=None) if numeric else None
    artifact = record.get("artifact") or {}
    out = {
        "size_mb": metric_value(record, "size_mb"),
        "p50_ms": metric_value(record, "p50_latency_ms"),
        "p95_ms": metric_value(record, "p95_latency_ms"),
        "throughput_qps": qps.get(best_batch) if best_batch is not None else None,
        "throughput_batch": int(best_batch) if best_batch is not None and str(best_batch).isdigit() else None,
        "accuracy": metric_value(record, "accuracy"),
        "oos_recall": metric_value(record, "oos_recall"),
        "in_scope_accuracy": metric_value(record, "in_scope_accuracy"),
        # The same three without the oos rule (the bare argmax); None in records written before the rule.
        "raw_accuracy": metric_value(record, "raw_accuracy"),
        "raw_in_scope_accuracy": metric_value(record, "raw_in_scope_accuracy"),
        "raw_oos_recall": metric_value(record, "raw_oos_recall"),
        "oos_rule": oos_rule_text(record),
        "memory_mb": metric_value(record, "memory_mb"),
        "majority_fraction": metric_value(record, "majority_fraction"),
        "format": artifact.get("format"),
        "precision": artifact.get("precision"),
        "technique": artifact.get("technique"),
        "speedup_p50": None,
        "size_reduction": None,
    }
    if baseline is not None:
        b50, bsize = metric_value(baseline, "p50_latency_ms"), metric_value(baseline, "size_mb")
        if b50 and out["p50_ms"]:
            out["speedup_p50"] = b50 / out["p50_ms"]
        if bsize and out["size_mb"] is not None:
            out["size_reduction"] = 1 - out["size_mb"] / bsize
    return out


def oos_rule_text(record: Record) -> str | None:
    """The rule in a few characters (``softmax<0.47``, ``energy<5.2``, ``none`` when fitted to reject nothing)."""
    rule = record.get("oos") if isinstance(record, dict) else None
    if not isinstance(rule, dict):
        return None
    if rule.get("threshold") is None:
        return "none"
    name = {"max_softmax": "softmax"}.get(rule.get("rule"), str(rule.get("rule")))
    return f"{name}<{rule['threshold']:.3g}"


def flat_metrics(record: BenchmarkRecord) -> dict[str, float]:
    """The numbers worth a column in the KFP UI: one flat name per figure, no nulls."""
    acc, lat, size = record["accuracy"], record["latency_ms"], record["size"]
    raw = acc.get("raw") or {}
    rule = record.get("oos") or {}
    flat = {
        **{f"raw_{k}": raw.get(k) for k in RAW_FIGURES},
        "oos_threshold": rule.get("threshold"),
        "accuracy": acc["accuracy"],
        "in_scope_accuracy": acc["in_scope_accuracy"],
        "oos_recall": acc["oos_recall"],
        "oos_precision": acc["oos_precision"],
        "macro_f1": acc["macro_f1"],
        "majority_fraction": acc["majority_fraction"],
        "p50_ms": lat["p50"],
        "p95_ms": lat["p95"],
        "p99_ms": lat["p99"],
        "mean_ms": lat["mean"],
        "model_p50_ms": lat["model_p50"],
        "p50_round_spread": lat.get("round_spread"),
        "size_mb": size["model_mb"],
        "parameters": size["parameters"],
        "nonzero_parameters": size["nonzero_parameters"],
        **{f"qps_b{b}": q for b, q in record["throughput_qps"].items()},
        "peak_rss_mb": record["memory"]["peak_rss_mb"],
        "load_time_s": record["load_time_s"],
        "qps_per_core": record["cost"]["qps_per_core"],
        "usd_per_million": record["cost"]["usd_per_million"],
    }
    return {k: float(v) for k, v in flat.items() if v is not None}
