"""Service-level objectives and the gate's settings, loaded from YAML and validated.

Goals follow Microsoft Olive's metric goals (threshold, max degradation, min
improvement, absolute or in percent), with the direction of every metric spelled
out in the file: a reader should never have to guess whether 0.01 on a latency
means "at most" or "at least". Relative goals name their baseline (the teacher
measured in the same run, or the model behind the ``production`` alias) and are
resolved into absolute limits only at decision time, on the same hardware.

A stated direction must agree with the metric's nature (accuracy is higher is
better, latency lower is better). That looks redundant, and is meant to be: it
catches the goal that was written with the wrong sign, which otherwise passes
every candidate silently.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from shrink.config_io import from_dict, read_yaml
from shrink.config_io import require as _require  # the checks below predate the public name

LOWER = "lower_is_better"
HIGHER = "higher_is_better"

Direction = Literal["lower_is_better", "higher_is_better"]
Kind = Literal[
    "threshold",
    "max_degradation",
    "min_improvement",
    "percent_max_degradation",
    "percent_min_improvement",
]
Baseline = Literal["teacher", "production", "reference"]
# What a reference record (shrink/reference.py: an architecture with random weights) measures: timing and size.
REFERENCE_METRICS = ("p50_latency_ms", "p95_latency_ms", "p99_latency_ms", "mean_latency_ms", "size_mb", "memory_mb")
Metric = Literal[
    "accuracy",
    "in_scope_accuracy",
    "oos_recall",
    "oos_precision",
    "raw_accuracy",
    "raw_in_scope_accuracy",
    "raw_oos_recall",
    "macro_f1",
    "class_accuracy",
    "majority_fraction",
    "p50_latency_ms",
    "p95_latency_ms",
    "p99_latency_ms",
    "mean_latency_ms",
    "size_mb",
    "nonzero_parameters",
    "memory_mb",
    "throughput_qps",
    "load_time_s",
    "usd_per_million",
]
Policy = Literal["lowest_p95", "smallest_size", "highest_accuracy", "highest_throughput", "lowest_memory"]
RELATIVE_KINDS = ("max_degradation", "min_improvement", "percent_max_degradation", "percent_min_improvement")


@dataclass(frozen=True)
class MetricSpec:
    """Where a metric lives in a benchmark record and how to read it.

    ``hardware``: the value depends on the machine it was measured on, so it is
    only compared between records with the same hardware fingerprint.
    ``per_class``: the value is a mapping label -> fraction, checked class by class.
    """

    path: tuple[str, ...]
    direction: str
    unit: str
    hardware: bool = False
    per_class: bool = False

    @property
    def fraction(self) -> bool:
        """Accuracy-like metrics live in [0, 1]; their limits and changes must too."""
        return self.unit == "fraction"


METRICS: dict[str, MetricSpec] = {
    "accuracy": MetricSpec(("accuracy", "accuracy"), HIGHER, "fraction"),
    "in_scope_accuracy": MetricSpec(("accuracy", "in_scope_accuracy"), HIGHER, "fraction"),
    "oos_recall": MetricSpec(("accuracy", "oos_recall"), HIGHER, "fraction"),
    "oos_precision": MetricSpec(("accuracy", "oos_precision"), HIGHER, "fraction"),
    # The model without its out-of-scope rule (the bare argmax); the names above are with it, as served.
    "raw_accuracy": MetricSpec(("accuracy", "raw", "accuracy"), HIGHER, "fraction"),
    "raw_in_scope_accuracy": MetricSpec(("accuracy", "raw", "in_scope_accuracy"), HIGHER, "fraction"),
    "raw_oos_recall": MetricSpec(("accuracy", "raw", "oos_recall"), HIGHER, "fraction"),
    "macro_f1": MetricSpec(("accuracy", "macro_f1"), HIGHER, "fraction"),
    "class_accuracy": MetricSpec(("accuracy", "per_class"), HIGHER, "fraction", per_class=True),
    "majority_fraction": MetricSpec(("accuracy", "majority_fraction"), LOWER, "fraction"),
    "p50_latency_ms": MetricSpec(("latency_ms", "p50"), LOWER, "ms", hardware=True),
    "p95_latency_ms": MetricSpec(("latency_ms", "p95"), LOWER, "ms", hardware=True),
    "p99_latency_ms": MetricSpec(("latency_ms", "p99"), LOWER, "ms", hardware=True),
    "mean_latency_ms": MetricSpec(("latency_ms", "mean"), LOWER, "ms", hardware=True),
    "size_mb": MetricSpec(("size", "model_mb"), LOWER, "MB"),
    "nonzero_parameters": MetricSpec(("size", "nonzero_parameters"), LOWER, "count"),
    "memory_mb": MetricSpec(("memory", "peak_rss_mb"), LOWER, "MB", hardware=True),
    "throughput_qps": MetricSpec(("throughput_qps",), HIGHER, "qps", hardware=True),
    "load_time_s": MetricSpec(("load_time_s",), LOWER, "s", hardware=True),
    "usd_per_million": MetricSpec(("cost", "usd_per_million"), LOWER, "USD", hardware=True),
}
assert set(METRICS) == set(typing.get_args(Metric)), "METRICS and Metric must name the same metrics"


@dataclass
class Goal:
    """One SLO: a metric, its direction, how the limit is formed, and against what.

    Kinds (``b`` = the baseline's measured value, ``v`` = ``value``):

    * ``threshold``: the limit is ``v`` itself (no baseline).
    * ``max_degradation``: at most ``v`` worse than ``b`` (``b - v`` or ``b + v``).
    * ``min_improvement``: at least ``v`` better than ``b``.
    * ``percent_max_degradation`` / ``percent_min_improvement``: the same with
      ``v`` in percent of ``b``.

    Fractions (accuracy, recall, F1, per-class accuracy) are in [0, 1]: a drop of
    one accuracy point is ``0.01``. ``class_accuracy`` is checked for every class
    (``max_degradation`` on it is "no class loses more than ``v``"). ``batch_size``
    picks a throughput figure; without it the best measured batch size counts.
    """

    metric: Metric
    direction: Direction
    kind: Kind
    value: float
    baseline: Baseline | None = None
    name: str | None = None
    batch_size: int | None = None

    @property
    def spec(self) -> MetricSpec:
        """How this goal's metric is read from a benchmark record."""
        return METRICS[self.metric]

    @property
    def label(self) -> str:
        """The goal's name, or one derived from its parts (``max_p95_latency_ms``, ``min_accuracy``...)."""
        if self.name:
            return self.name
        higher = self.direction == HIGHER
        if self.kind == "threshold":
            return f"{'min' if higher else 'max'}_{self.metric}"
        pct = "_pct" if self.kind.startswith("percent_") else ""
        if self.kind.endswith("max_degradation"):
            return f"max_{self.metric}_{'drop' if higher else 'increase'}{pct}_vs_{self.baseline}"
        return f"min_{self.metric}_{'gain' if higher else 'reduction'}{pct}_vs_{self.baseline}"

    def check(self, where: str) -> None:
        """Reject goals that cannot mean what was intended: wrong direction, impossible values."""
        spec = self.spec
        _require(
            self.direction == spec.direction,
            f"{where}.direction",
            f"{self.direction!r} contradicts metric {self.metric!r}, which is {spec.direction}",
        )
        _require(math.isfinite(self.value), f"{where}.value", f"must be a finite number, got {self.value}")
        if self.kind == "threshold":
            _require(self.baseline is None, f"{where}.baseline", "a threshold is absolute; remove the baseline")
            if spec.fraction:
                _require(
                    0 <= self.value <= 1,
                    f"{where}.value",
                    f"{self.metric} is a fraction in [0, 1], got {self.value} (one point = 0.01)",
                )
            else:
                _require(self.value > 0, f"{where}.value", f"a {self.metric} limit must be > 0, got {self.value}")
        else:
            _require(
                self.baseline is not None,
                f"{where}.baseline",
                f"a {self.kind} goal needs a baseline: teacher, production or reference",
            )
            _require(
                self.value >= 0, f"{where}.value", f"must be >= 0 (the kind already says which way), got {self.value}"
            )
            _require(
                self.baseline != "reference" or self.metric in REFERENCE_METRICS,
                f"{where}.baseline",
                f"the reference (random weights) measures only {', '.join(REFERENCE_METRICS)}, not {self.metric}",
            )
            if spec.fraction and not self.kind.startswith("percent_"):
                _require(
                    self.value <= 1,
                    f"{where}.value",
                    f"{self.metric} is a fraction: a change of {self.value} is impossible (one point = 0.01)",
                )
            if self.kind == "percent_min_improvement" and self.direction == LOWER:
                _require(self.value < 100, f"{where}.value", f"cannot reduce {self.metric} by {self.value}% or more")
        if self.batch_size is not None:
            _require(self.metric == "throughput_qps", f"{where}.batch_size", "only applies to throughput_qps")
            _require(self.batch_size > 0, f"{where}.batch_size", f"must be > 0, got {self.batch_size}")
        if self.name is not None:
            _require(bool(self.name.strip()), f"{where}.name", "must not be empty")


def default_slos() -> list[Goal]:
    """Goals that hold for any deployment; absolute latency and size limits are the user's to set."""
    return [
        Goal("accuracy", HIGHER, "max_degradation", 0.01, baseline="teacher", name="max_accuracy_drop"),
        Goal("class_accuracy", HIGHER, "max_degradation", 0.10, baseline="teacher", name="max_class_regression"),
    ]


def default_production_goals() -> list[Goal]:
    """Champion/challenger when the config has no production goal: no less accurate, p95 at most 10% slower.

    The 10% absorbs run-to-run latency noise between two benchmark runs on the
    same hardware; accuracy on the same test set is exact, so no slack there.
    """
    return [
        Goal("accuracy", HIGHER, "max_degradation", 0.0, baseline="production", name="no_accuracy_loss_vs_production"),
        Goal(
            "p95_latency_ms",
            LOWER,
            "percent_max_degradation",
            10.0,
            baseline="production",
            name="p95_within_10pct_of_production",
        ),
    ]


@dataclass
class GateConfig:
    """Everything the gate and the promotion need.

    ``compare_to_production``: evaluate goals whose baseline is ``production``
    (champion/challenger); when no such goal is written, those of
    :func:`default_production_goals` apply. False skips them, for example to
    replace a production model measured on other hardware or another test set.
    ``max_majority_fraction``: a candidate that sends more than this share of the
    test set to one class has collapsed and never passes, whatever its accuracy.
    ``policy`` orders the candidates that pass; ``tie_tolerance_percent`` treats
    values within that percentage of the best as equal on the policy's first key,
    so measurement noise does not decide; the next keys then do (accuracy, size,
    p95 latency, and finally the candidate name, so the choice is deterministic).
    ``class_regression_alpha``: a per-class goal fails for a class only when its
    shortfall is significant: an exact one-sided binomial test of the class's
    correct answers against its limit, at this family-wise level over all classes
    (Bonferroni). An intent with 30 test queries moves in steps of 3.3 points and
    two equally good models differ on some of 150 intents by 5 queries by chance;
    a flat limit then fails equal models. 0 compares every class flatly.
    ``allow_teacher``: the teacher may itself be promoted (it is otherwise only
    the baseline). The registry is ``s3://<registry_bucket>/<model_name>/``.
    """

    slos: list[Goal] = field(default_factory=default_slos)
    policy: Policy = "lowest_p95"
    tie_tolerance_percent: float = 0.0
    max_majority_fraction: float = 0.5
    class_regression_alpha: float = 0.05
    compare_to_production: bool = True
    allow_teacher: bool = False
    registry_bucket: str = "shrink-models"
    model_name: str | None = None

    @property
    def registry_uri(self) -> str:
        """Root of the model registry: ``s3://<registry_bucket>``."""
        return f"s3://{self.registry_bucket}"

    def goals(self) -> list[tuple[Goal, bool]]:
        """The goals to evaluate, each with ``True`` when it is a built-in default, not from the config."""
        written = [(g, False) for g in self.slos]
        if self.compare_to_production and not any(g.baseline == "production" for g in self.slos):
            written += [(g, True) for g in default_production_goals()]
        return written

    def check(self, where: str) -> None:
        """Value rules across fields: unique goal names, sane limits, a plain bucket name."""
        labels = [g.label for g in self.slos]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        _require(not dupes, f"{where}.slos", f"goal names must be unique; {dupes[0] if dupes else ''!r} repeats")
        _require(
            0 < self.max_majority_fraction <= 1,
            f"{where}.max_majority_fraction",
            f"must be in (0, 1], got {self.max_majority_fraction}",
        )
        _require(
            0 <= self.class_regression_alpha < 1,
            f"{where}.class_regression_alpha",
            f"must be in [0, 1) (0: flat per-class limits), got {self.class_regression_alpha}",
        )
        _require(
            0 <= self.tie_tolerance_percent < 100,
            f"{where}.tie_tolerance_percent",
            f"must be in [0, 100), got {self.tie_tolerance_percent}",
        )
        bucket_ok = bool(self.registry_bucket.strip()) and "/" not in self.registry_bucket
        _require(bucket_ok, f"{where}.registry_bucket", f"must be a bucket name, got {self.registry_bucket!r}")
        _require(self.model_name is None or bool(self.model_name.strip()), f"{where}.model_name", "must not be empty")


def gate_config(data: dict[str, Any] | None, where: str = "gate") -> GateConfig:
    """Build a :class:`GateConfig` from the pipeline's ``gate`` parameter (a plain dict)."""
    return from_dict(GateConfig, data or {}, where)


def load_gate_config(path: str | Path) -> GateConfig:
    """Load the gate settings from a YAML file: a bare gate section, or a pipeline config with ``gate:``."""
    path = Path(path)
    data = read_yaml(path, "SLO file")
    if "gate" in data:
        return gate_config(data["gate"], f"{path}:gate")
    return gate_config(data, str(path))
