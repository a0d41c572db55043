"""The figures a candidate is judged on: accuracy by class and latency statistics.

Pure functions on arrays (numpy only), so they are exact and unit-tested apart
from any model. Conventions follow scikit-learn where there is one (macro-F1
over the labels that occur, 0 for an undefined precision) so numbers can be
checked against it by anyone, without making it a dependency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

OOS_LABEL = "oos"  # the same name shrink.data uses; repeated here to keep this module import-light


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_labels: int) -> np.ndarray:
    """Counts ``[true, predicted]`` over ``num_labels`` classes (rows: truth, as KFP shows it)."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred {p.size}")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= num_labels):
        raise ValueError(f"label ids must be in [0, {num_labels})")
    cm = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def accuracy_report(
    y_true: Sequence[int], y_pred: Sequence[int], label_names: Sequence[str], oos_label: str = OOS_LABEL
) -> dict[str, Any]:
    """The ``accuracy`` section of a benchmark record.

    ``oos`` (``oos_label``) counts as a class in ``accuracy`` and ``macro_f1``. ``in_scope_accuracy``
    is accuracy on the in-scope queries only (predicting ``oos`` for one is wrong):
    with ``oos_recall`` and ``oos_precision`` it separates "knows the intents" from
    "knows when to say no", which a single accuracy hides. All three are ``None``
    when the label set has no ``oos``. ``per_class`` is the recall of each class
    (``None`` for a class absent from the test split), ``per_class_support`` its number of
    test examples (the gate tells a class that regressed from one that drew a few hard
    queries with it). ``majority_fraction`` is the
    share of predictions that go to the most predicted class: a compressed model
    that collapsed onto one class shows it here even when accuracy looks passable.
    """
    names = list(label_names)
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if t.size == 0:
        raise ValueError("accuracy_report needs at least one example")
    cm = confusion_matrix(t, p, len(names))
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = (support > 0) | (predicted > 0)

    report: dict[str, Any] = {
        "accuracy": float(tp.sum() / t.size),
        "in_scope_accuracy": None,
        "oos_recall": None,
        "oos_precision": None,
        "macro_f1": float(f1[present].mean()),
        "per_class": {n: (float(recall[i]) if support[i] else None) for i, n in enumerate(names)},
        "per_class_support": {n: int(support[i]) for i, n in enumerate(names)},
        "majority_fraction": float(predicted.max() / t.size),
    }
    if oos_label in names:
        k = names.index(oos_label)
        in_scope = t != k
        report["in_scope_accuracy"] = _ratio(np.sum(p[in_scope] == t[in_scope]), np.sum(in_scope))
        report["oos_recall"] = _ratio(cm[k, k], support[k])
        report["oos_precision"] = _ratio(cm[k, k], predicted[k])
    return report


def percentiles(timings_ms: Sequence[float]) -> dict[str, float | int]:
    """p50/p95/p99 (linear interpolation, numpy's default), mean, std and count of timings."""
    x = np.asarray(timings_ms, dtype=np.float64)
    if x.size == 0:
        raise ValueError("percentiles needs at least one timing")
    p50, p95, p99 = np.percentile(x, [50, 95, 99])
    return {
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "mean": float(x.mean()),
        "std": float(x.std(ddof=1)) if x.size > 1 else 0.0,
        "samples": int(x.size),
    }


def bootstrap_ci(
    values: Sequence[float], q: float, resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the ``q``-th percentile of ``values``.

    Why: a p95 from 1,000 requests moves by several percent between runs; the gate
    should know whether two candidates differ by more than that before preferring
    one. Resampling is seeded so a record is reproducible from its timings.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples, dtype=np.float64)
    chunk = max(1, 2_000_000 // x.size)  # bound memory: at most ~16 MB of indices at a time
    for start in range(0, resamples, chunk):
        n = min(chunk, resamples - start)
        idx = rng.integers(0, x.size, size=(n, x.size))
        stats[start : start + n] = np.percentile(x[idx], q, axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    return float(lo), float(hi)


def paired_difference(y_true: Sequence[int], pred_a: Sequence[int], pred_b: Sequence[int]) -> dict[str, float | int]:
    """Whether model A's accuracy differs from model B's on the same texts: exact McNemar test.

    Why: two quantizations of one student, or a student before and after vocabulary pruning, answer
    almost every text alike; a few tenths of a point between them is a handful of texts, and whether
    that is a difference or the luck of those texts is what the count of texts only one of them gets
    right says (McNemar 1947; exact two-sided binomial on the discordant pairs, which is
    right at these counts where the chi-square approximation is not).

    Returns the accuracy difference ``a - b``, ``a_only`` (texts A gets right and B wrong),
    ``b_only``, and the two-sided ``p_value`` (1.0 when they never disagree on correctness).
    """
    t = np.asarray(y_true, dtype=np.int64)
    a = np.asarray(pred_a, dtype=np.int64)
    b = np.asarray(pred_b, dtype=np.int64)
    if not t.shape == a.shape == b.shape:
        raise ValueError(f"y_true, pred_a and pred_b hold {t.size}, {a.size} and {b.size} labels")
    if t.size == 0:
        raise ValueError("paired_difference needs at least one text")
    right_a, right_b = a == t, b == t
    a_only = int(np.sum(right_a & ~right_b))
    b_only = int(np.sum(right_b & ~right_a))
    n, k = a_only + b_only, min(a_only, b_only)
    # P(X <= k) for X ~ Binomial(n, 1/2), doubled: the two tails are equal.
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n if n else 1.0
    return {
        "difference": float(right_a.mean() - right_b.mean()),
        "a_only": a_only,
        "b_only": b_only,
        "p_value": min(1.0, 2 * tail),
    }
