"""The SLO gate: which candidate, if any, may go to production, and why.

The gate fails closed. A candidate is promoted only when its benchmark record
is complete, it was measured on the baseline's hardware and test set, it has
not collapsed onto one class, and it meets every goal. Relative goals are
resolved into absolute limits against the teacher measured in the same run (and
the model behind the ``production`` alias, for champion/challenger); the
decision keeps both the goal as written and the limit it became, so a reader
can check every verdict by hand. When nothing passes, nothing is promoted and
the decision names the candidate that came closest.

Two steps, kept apart: :func:`judge` gives one candidate its verdict against the
baselines (:func:`resolve_baselines`, the same for all), and :func:`choose` picks
among those that pass by the policy; :func:`decide` composes them, and
:func:`run_gate` is the pipeline step around it (read the records, decide, write
the decision and the report). Records are read through :mod:`shrink.record`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shrink.champion import CANDIDATE as CHAMPION
from shrink.errors import ShrinkError
from shrink.files import read_json
from shrink.logs import log
from shrink.promote import current_production
from shrink.record import Record, lookup, metric_value, read_record, record_problems, summarize
from shrink.reference import ratios, reference_problems
from shrink.report import format_table, write_report
from shrink.slo import HIGHER, GateConfig, Goal

DECISION_SCHEMA = "shrink.decision/v1"
BASELINE = "teacher"
# Relative slack on comparisons: 0.9 - 0.01 must not fail 0.89 by a rounding error.
EPS = 1e-9

# Policy -> sort keys of the candidates that pass, first key decides, the rest break ties.
POLICY_KEYS = {
    "lowest_p95": ("p95_ms", "-accuracy", "size_mb"),
    "smallest_size": ("size_mb", "p95_ms", "-accuracy"),
    "highest_accuracy": ("-accuracy", "p95_ms", "size_mb"),
    "highest_throughput": ("-throughput_qps", "p95_ms", "-accuracy", "size_mb"),
    "lowest_memory": ("memory_mb", "p95_ms", "-accuracy", "size_mb"),
}


# --------------------------------------------------------------------------- goals


def resolve_limit(goal: Goal, base: float | None) -> tuple[float, str]:
    """The absolute limit a goal means for one baseline value, and how it was formed, in words."""
    v, higher = goal.value, goal.direction == HIGHER
    if goal.kind == "threshold":
        return v, f"threshold {v:g}"
    assert base is not None
    sign = {"max_degradation": -1, "min_improvement": 1, "percent_max_degradation": -1, "percent_min_improvement": 1}[
        goal.kind
    ] * (1 if higher else -1)
    if goal.kind.startswith("percent_"):
        limit = base * (1 + sign * v / 100)
        return limit, f"{goal.baseline} {base:.6g} {'+' if sign > 0 else '-'} {v:g}% = {limit:.6g}"
    limit = base + sign * v
    return limit, f"{goal.baseline} {base:.6g} {'+' if sign > 0 else '-'} {v:g} = {limit:.6g}"


def _passes(measured: float, limit: float, higher: bool) -> bool:
    slack = EPS * max(1.0, abs(limit))
    return measured >= limit - slack if higher else measured <= limit + slack


def _violation(measured: float, limit: float, higher: bool) -> float:
    """How far past the limit, relative to it, so unlike metrics can be added when naming the closest."""
    gap = (limit - measured) if higher else (measured - limit)
    return max(0.0, gap) / max(abs(limit), 1e-6)


def _comparable(goal: Goal, candidate: dict, base: dict, base_name: str) -> str | None:
    """Why ``candidate`` cannot be compared with ``base`` on this goal (None when it can)."""
    fingerprint = ("hardware", "fingerprint")
    if goal.spec.hardware and lookup(candidate, fingerprint) != lookup(base, fingerprint):
        return f"hardware mismatch: {base_name} was measured on other hardware"
    if goal.spec.unit == "fraction" and (
        lookup(candidate, ("dataset", "fingerprint")) != lookup(base, ("dataset", "fingerprint"))
        or candidate.get("label_names") != base.get("label_names")
    ):
        return f"dataset mismatch: {base_name} was evaluated on another test set or label set"
    return None


def _binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (exact; n is a class's test examples)."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= n else 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
        for i in range(0, min(k, n) + 1)
    ]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def _class_shortfall_significant(
    accuracy: float, support: int | None, limit: float, alpha: float
) -> tuple[bool, float | None]:
    """(fails, p-value): is a class's accuracy below ``limit`` by more than its test examples explain?

    Exact one-sided binomial test of the class's correct answers against the limit
    as its true accuracy; ``alpha`` is already the per-class level. Without a
    support count (an older record) or with ``alpha`` 0 the comparison is flat.
    """
    if not support or alpha <= 0:
        return True, None
    correct = int(round(accuracy * support))
    p_value = _binomial_cdf(correct, support, limit)
    return p_value < alpha, p_value


def evaluate_goal(
    goal: Goal, record: dict, baselines: dict[str, dict | None], default: bool = False, class_alpha: float = 0.0
) -> dict:
    """Check one goal on one record; the result says measured value, limit, how it was resolved, verdict.

    ``class_alpha`` (per-class goals): the family-wise level at which a class's shortfall must be
    significant to fail it (see ``GateConfig.class_regression_alpha``); 0 compares flatly.
    """
    spec = goal.spec
    higher = goal.direction == HIGHER
    result: dict[str, Any] = {
        "slo": goal.label,
        "metric": goal.metric,
        "direction": goal.direction,
        "kind": goal.kind,
        "value": goal.value,
        "baseline": goal.baseline,
        "default": default,
        "baseline_value": None,
        "limit": None,
        "resolved": None,
        "measured": None,
        "passed": False,
        "violation": None,
        "reason": None,
    }
    if goal.batch_size is not None:
        result["batch_size"] = goal.batch_size
    base = None
    if goal.baseline is not None:
        base = baselines.get(goal.baseline)
        if base is None:
            result["reason"] = f"no {goal.baseline} benchmark to compare with"
            return result
        why = _comparable(goal, record, base, goal.baseline)
        if why:
            result["reason"] = why
            return result
    if (
        goal.metric in ("oos_recall", "oos_precision", "raw_oos_recall")
        and lookup(record, ("dataset", "has_oos")) is False
    ):
        result.update(passed=True, reason="not applicable: the dataset has no oos label")
        return result
    measured = metric_value(record, goal)
    if measured is None:
        result["reason"] = f"{goal.metric} was not measured"
        return result
    base_value = metric_value(base, goal) if base is not None else None
    if base is not None and base_value is None:
        result["reason"] = f"{goal.metric} was not measured for {goal.baseline}"
        return result
    if not spec.per_class:
        limit, resolved = resolve_limit(goal, base_value)
        ok = _passes(measured, limit, higher)
        result.update(
            baseline_value=base_value,
            limit=limit,
            resolved=resolved,
            measured=measured,
            passed=ok,
            violation=_violation(measured, limit, higher),
        )
        if not ok:
            result["reason"] = f"{goal.metric} {measured:.6g} {'<' if higher else '>'} limit {limit:.6g}"
        return result
    # Per class: every class must meet its own limit, beyond what its number of test examples explains.
    # The worst failing class is reported (the worst class overall when none fails), and so is every class
    # below its limit by no more than noise.
    support = lookup(record, ("accuracy", "per_class_support"))
    support = support if isinstance(support, dict) else {}
    per_class_alpha = class_alpha / max(1, len(measured)) if higher else 0.0
    gaps, failing, total, within_noise = {}, [], 0.0, {}
    for label in sorted(set(measured) | set(base_value or {})):
        if label not in measured or (base_value is not None and label not in base_value):
            failing.append(label)
            total += 1.0
            continue
        limit, resolved = resolve_limit(goal, base_value[label] if base_value is not None else None)
        gaps[label] = ((measured[label] - limit) if higher else (limit - measured[label]), limit, resolved)
        if not _passes(measured[label], limit, higher):
            fails, p_value = _class_shortfall_significant(measured[label], support.get(label), limit, per_class_alpha)
            if fails:
                failing.append(label)
                total += _violation(measured[label], limit, higher)
            else:
                within_noise[label] = {
                    "measured": measured[label],
                    "limit": limit,
                    "support": support.get(label),
                    "p_value": p_value,
                }
    if not gaps:
        result["reason"] = "no class could be compared"
        return result
    pool = [c for c in failing if c in gaps] or list(gaps)
    label = min(pool, key=lambda c: gaps[c][0])
    _, limit, resolved = gaps[label]
    result.update(
        measured=measured[label],
        limit=limit,
        baseline_value=base_value[label] if base_value else None,
        resolved=f"class {label!r}: {resolved}",
        passed=not failing,
        violation=total,
        worst_class=label,
        failing_classes=failing,
        below_limit_within_noise=within_noise,
    )
    if per_class_alpha:
        result["significance"] = (
            f"a class fails only if P(this few correct | true accuracy = limit) < "
            f"{class_alpha:g} / {len(measured)} classes (exact binomial)"
        )
    if failing:
        result["reason"] = (
            f"{len(failing)} class(es) significantly below their limit, worst {label!r}: "
            f"{measured[label]:.4g} < {limit:.4g}"
        )
    return result


# --------------------------------------------------------------------------- baselines


@dataclass(frozen=True)
class Baselines:
    """What every candidate is compared with, resolved once per decision so each verdict sees the same.

    Attributes:
        teacher: The teacher's record when usable, else None (then no candidate is compared).
        teacher_problems: Why the teacher's record is unusable (empty when it is usable).
        production: The alias pointer of the model in production, or None when nothing is.
        production_record: The record the production goals compare with (see ``_production_view``).
        production_error: Why the production goals cannot pass (fail closed), or None.
        production_view: What the decision says about the production model, or None.
        reference: The reference architecture's record from this run (``shrink.reference``), or None:
            the baseline of goals written ``baseline: reference``, which fail closed without it.
        reference_problems: Why the reference record is unusable, or why there is none.
    """

    teacher: dict | None
    teacher_problems: list[str]
    production: dict | None
    production_record: dict | None
    production_error: str | None
    production_view: dict | None
    reference: dict | None = None
    reference_problems: tuple[str, ...] = ()


def resolve_baselines(
    records: dict[str, Record],
    cfg: GateConfig,
    production: dict | None = None,
    champion: dict | None = None,
    reference: dict | None = None,
) -> Baselines:
    """The teacher's, the production model's and the reference's records, each checked before use."""
    teacher = records.get(BASELINE)
    problems = record_problems(teacher) if teacher is not None else ["no teacher benchmark record"]
    usable = teacher if not problems else None
    view, prod_record, prod_error = _production_view(production, cfg, list(records.values()), champion)
    if prod_record is not None:
        view["summary"] = summarize(prod_record, usable)
    ref_problems = tuple(reference_problems(reference)) if reference is not None else ("none measured in this run",)
    ref = reference if not ref_problems else None
    return Baselines(usable, problems, production, prod_record, prod_error, view, ref, ref_problems)


def _production_view(
    production: dict | None, cfg: GateConfig, records: list[dict], champion: dict | None = None
) -> tuple[dict | None, dict | None, str | None]:
    """(summary for the decision, benchmark record to compare with, why it cannot be compared).

    Relative goals are meant against a baseline measured in the same run on the
    same hardware: on a shared machine a model can time 15-40% slower from one
    hour to the next. So the champion's record is, in order of preference: this
    run's record of a candidate that is the very artifact in production (same
    content hash, e.g. a rerun whose steps came from cache: the unchanged model is
    then judged by its own record, not by a second noisy timing of itself); its
    re-measurement by this run's ``benchmark_production`` step
    (:mod:`shrink.champion`); and only then the record stored at promotion, whose
    drift the goal's tolerance has to absorb. Each is matched to the alias by
    content hash, so a record of another model (the alias moved meanwhile) is never used.
    """
    if production is None:
        return None, None, None
    view = {k: production.get(k) for k in ("version", "uri", "content_hash", "candidate", "promoted_at")}
    view["compared"] = cfg.compare_to_production
    if not cfg.compare_to_production:
        return view, None, None
    digest = production.get("content_hash")

    def same_model(r: dict | None) -> bool:
        return (
            bool(digest)
            and isinstance(r, dict)
            and not record_problems(r)
            and lookup(r, ("artifact", "content_hash")) == digest
        )

    fresh = [r for r in records if same_model(r)]
    if fresh:  # the very record the unchanged model is judged by: it cannot fail against itself by noise
        view["measured"] = f"in this run, as candidate {fresh[0]['candidate']!r}"
        return view, fresh[0], None
    if same_model(champion):
        view["measured"] = "in this run, by the benchmark_production step"
        return view, champion, None
    if isinstance(champion, dict) and not champion.get("absent"):
        problems = record_problems(champion) or ["it is of another model than the alias names"]
        view["not_measured"] = f"this run's production benchmark unusable: {'; '.join(problems)}"
    record = production.get("benchmark")
    problems = record_problems(record) if record is not None else ["no benchmark.json stored with it"]
    if problems:
        view["problems"] = problems
        # A production model whose record cannot be read can't be shown to be beaten: fail closed.
        return (
            view,
            None,
            (
                f"production benchmark unusable ({'; '.join(problems)}); "
                "set gate.compare_to_production: false to replace it anyway"
            ),
        )
    view["measured"] = "stored record (the production model was not measured in this run)"
    return view, record, None


# --------------------------------------------------------------------------- judging one candidate


def judge(name: str, record: Record, cfg: GateConfig, baselines: Baselines) -> dict:
    """One candidate's verdict: ``pass``, ``fail``, ``invalid`` or ``baseline``, every check and why.

    A candidate is compared only when its record is valid and it was measured on the
    teacher's hardware and test set; then it must pass the collapse check and every goal.
    """
    is_baseline = name == BASELINE
    entry: dict[str, Any] = {
        "name": name,
        "status": "fail",
        "eligible": not is_baseline or cfg.allow_teacher,
        "reasons": [],
        "checks": [],
        "summary": None,
        "artifact": None,
        "hardware_fingerprint": None,
    }
    problems = record_problems(record)
    if problems:
        entry.update(status="invalid", reasons=[f"benchmark missing or invalid: {p}" for p in problems])
        return entry
    entry.update(
        summary=summarize(record, baselines.teacher),
        artifact=record.get("artifact"),
        hardware_fingerprint=record["hardware"]["fingerprint"],
    )
    blocked = _not_comparable(record, baselines)
    if blocked is not None:
        reason, mismatch = blocked
        entry["reasons"].append(reason)
        if mismatch:
            entry["mismatch"] = True
    else:
        entry["checks"] = _checks(record, cfg, baselines)
        failed = [c for c in entry["checks"] if not c["passed"]]
        entry["reasons"] += [f"{c['slo']}: {c['reason']}" for c in failed]
        entry["status"] = "pass" if not failed else "fail"
        digest = (baselines.production or {}).get("content_hash")
        if digest and digest == lookup(record, ("artifact", "content_hash")):
            entry["in_production"] = True
    if is_baseline and not entry["eligible"]:
        entry["status"] = "baseline"
        entry["reasons"].insert(0, "the baseline, not a candidate (gate.allow_teacher promotes it)")
    return entry


def _not_comparable(record: dict, baselines: Baselines) -> tuple[str, bool] | None:
    """(why, whether it is a measurement mismatch) when a valid record cannot be judged; None when it can."""
    teacher = baselines.teacher
    if teacher is None:
        return f"no usable teacher baseline ({'; '.join(baselines.teacher_problems)})", False
    if record["hardware"]["fingerprint"] != teacher["hardware"]["fingerprint"]:
        return (
            "hardware mismatch: measured on "
            f"{lookup(record, ('hardware', 'cpu_model'))!r} ({record['hardware']['fingerprint'][:12]}), "
            f"the teacher on {lookup(teacher, ('hardware', 'cpu_model'))!r} "
            f"({teacher['hardware']['fingerprint'][:12]}); not compared"
        ), True
    if (
        record["dataset"]["fingerprint"] != teacher["dataset"]["fingerprint"]
        or record["label_names"] != teacher["label_names"]
    ):
        return "dataset mismatch: not the teacher's test set or label set; not compared", True
    return None


def _checks(record: dict, cfg: GateConfig, baselines: Baselines) -> list[dict]:
    """The collapse check, then every goal; production goals pass trivially when nothing is in production."""
    checks = [_collapse_check(record["accuracy"]["majority_fraction"], cfg.max_majority_fraction)]
    against = {
        "teacher": baselines.teacher,
        "production": baselines.production_record,
        "reference": baselines.reference,
    }
    for goal, default in cfg.goals():
        if goal.baseline == "production" and not cfg.compare_to_production:
            continue
        check = evaluate_goal(goal, record, against, default, cfg.class_regression_alpha)
        if goal.baseline == "production" and baselines.production is None:
            check.update(passed=True, reason="not applicable: nothing in production yet")
        elif goal.baseline == "production" and baselines.production_error:
            check["reason"] = baselines.production_error
        elif goal.baseline == "reference" and baselines.reference is None:
            check["reason"] = f"no usable reference: {'; '.join(baselines.reference_problems)}"
        checks.append(check)
    return checks


def _collapse_check(majority: float, limit: float) -> dict:
    """Collapse is checked before any goal: high accuracy on a skewed test set can hide it."""
    ok = majority <= limit
    return {
        "slo": "collapse",
        "metric": "majority_fraction",
        "direction": "lower_is_better",
        "kind": "threshold",
        "value": limit,
        "baseline": None,
        "default": True,
        "baseline_value": None,
        "limit": limit,
        "resolved": f"max_majority_fraction {limit:g}",
        "measured": majority,
        "passed": ok,
        "violation": _violation(majority, limit, False),
        "reason": None if ok else f"collapse: {majority:.0%} of the test set goes to one class (limit {limit:.0%})",
    }


# --------------------------------------------------------------------------- choosing among those that pass


def choose(entries: list[dict], cfg: GateConfig, baselines: Baselines) -> dict[str, Any]:
    """Among the eligible candidates that pass, the policy's best; else none, with the closest named.

    Returns:
        ``chosen`` (a name or None), ``reason`` in words, ``ranking`` of those that pass, and
        ``closest``: the failing candidate nearest to passing when nothing is chosen.
    """
    passing = [e for e in entries if e["status"] == "pass" and e["eligible"]]
    order, note = rank(passing, cfg.policy, cfg.tie_tolerance_percent)
    if order:
        chosen = order[0]
        n = len(next(e for e in entries if e["name"] == chosen)["checks"])
        reason = f"{chosen} passes all {n} checks and has the {note} of {len(order)} passing"
        if len(order) > 1:
            reason += f" ({', '.join(order)})"
        return {"chosen": chosen, "reason": reason, "ranking": order, "closest": None}
    closest = _closest([e for e in entries if e["eligible"]])
    if not entries:
        reason = "no benchmark records: nothing to promote"
    elif baselines.teacher is None:
        reason = f"nothing promoted: the teacher baseline is unusable ({'; '.join(baselines.teacher_problems)})"
    else:
        reason = "no candidate meets every SLO; nothing promoted"
    if closest:
        reason += f"; closest: {closest['name']} ({'; '.join(closest['reasons'][:3]) or 'failed'})"
    return {"chosen": None, "reason": reason, "ranking": order, "closest": closest}


def rank(passing: list[dict], policy: str, tie_tolerance_percent: float = 0.0) -> tuple[list[str], str]:
    """Order passing candidates by the policy; values within tolerance of the best tie on the first key."""
    keys = POLICY_KEYS[policy]
    first, rest = keys[0], keys[1:]

    def full(entry):
        return (*(_sort_value(entry["summary"], k) for k in keys), entry["name"])

    def tail(entry):
        return (*(_sort_value(entry["summary"], k) for k in rest), entry["name"])

    if not passing:
        return [], ""
    best = min(_sort_value(e["summary"], first) for e in passing)
    margin = abs(best) * tie_tolerance_percent / 100 + EPS * max(1.0, abs(best))
    tied = sorted((e for e in passing if _sort_value(e["summary"], first) <= best + margin), key=tail)
    others = sorted((e for e in passing if e not in tied), key=full)
    order = [e["name"] for e in tied + others]
    metric = first.lstrip("-")
    note = f"{'highest' if first.startswith('-') else 'lowest'} {metric} (policy {policy})"
    if len(tied) > 1:
        within = f" within {tie_tolerance_percent:g}%" if tie_tolerance_percent else ""
        note += (
            f"; tied{within} with {', '.join(e['name'] for e in tied[1:])}, "
            f"broken by {', '.join(k.lstrip('-') for k in rest)} then name"
        )
    return order, note


def _sort_value(summary: dict, key: str) -> float:
    value = summary.get(key.lstrip("-"))
    if value is None:
        return math.inf
    return -value if key.startswith("-") else value


def _closest(entries: list[dict]) -> dict | None:
    """The failing candidate nearest to passing: fewest failed checks, then smallest total overshoot."""
    scored = []
    for e in entries:
        if e["status"] != "fail":
            continue
        failed = [c for c in e["checks"] if not c["passed"]]
        unmeasurable = bool(e.get("mismatch")) or not e["checks"]
        total = sum(c["violation"] if c["violation"] is not None else 1.0 for c in failed)
        scored.append(((unmeasurable, len(failed), total, e["name"]), e, failed))
    if not scored:
        return None
    _, e, failed = min(scored, key=lambda s: s[0])
    return {"name": e["name"], "failed": [c["slo"] for c in failed], "reasons": e["reasons"]}


# --------------------------------------------------------------------------- the decision


def decide(
    records: list[Record],
    cfg: GateConfig,
    production: dict | None = None,
    champion: dict | None = None,
    reference: dict | None = None,
) -> dict:
    """Judge every benchmark record against the SLOs and choose at most one candidate to promote.

    Args:
        records: Benchmark records (``shrink.benchmark/v1``); the one named ``teacher`` is the baseline.
            A record with an ``error`` key stands for a benchmark that is missing or unreadable.
        cfg: Goals, policy, collapse limit and champion/challenger switch.
        production: The alias pointer of the current production model with its stored benchmark
            record under ``benchmark`` (:func:`shrink.promote.current_production`), or None.
        champion: The production model's benchmark record from this run
            (:func:`shrink.champion.measure_production`), or None; not a candidate, only the baseline
            of the production goals.
        reference: The reference architecture's record from this run (``shrink.reference``), or None: the
            baseline of ``baseline: reference`` goals and the decision's ``reference`` section (each
            candidate's speed-up and size reduction against it).

    Returns:
        The decision record: per candidate every goal with measured value, limit and verdict; the
        chosen candidate (or None) and why; the closest candidate when none passes.
    """
    by_name = _by_candidate(records)
    baselines = resolve_baselines(by_name, cfg, production, champion, reference)
    entries = [judge(name, by_name[name], cfg, baselines) for name in sorted(by_name, key=lambda n: (n != BASELINE, n))]
    teacher = baselines.teacher or {}
    return {
        "schema": DECISION_SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **choose(entries, cfg, baselines),
        "policy": {
            "name": cfg.policy,
            "keys": list(POLICY_KEYS[cfg.policy]),
            "tie_tolerance_percent": cfg.tie_tolerance_percent,
        },
        "baseline": {
            "candidate": BASELINE,
            "usable": baselines.teacher is not None,
            "problems": baselines.teacher_problems,
            "hardware": teacher.get("hardware"),
            "dataset": teacher.get("dataset"),
        },
        "production": baselines.production_view,
        "reference": _reference_view(reference, baselines, by_name),
        "candidates": entries,
        "warnings": _warnings(baselines, cfg),
        "config": _config_dict(cfg),
        "records": {n: r for n, r in by_name.items() if isinstance(r, dict)},
    }


def _by_candidate(records: list[Record]) -> dict[str, Record]:
    """The records by candidate name, in their given order; every name present and unique."""
    names = [r.get("candidate") if isinstance(r, dict) else None for r in records]
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name:
            raise ShrinkError(f"benchmark record #{i}: no candidate name")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ShrinkError(f"benchmark records: candidate {dupes[0]!r} appears more than once")
    return dict(zip(names, records, strict=True))


def _warnings(baselines: Baselines, cfg: GateConfig) -> list[str]:
    """What makes the whole decision less meaningful than it looks."""
    teacher_majority = (baselines.teacher or {}).get("accuracy", {}).get("majority_fraction", 0.0)
    if teacher_majority > cfg.max_majority_fraction:
        return ["the teacher itself predicts one class for most inputs; relative goals mean little"]
    return []


def _config_dict(cfg: GateConfig) -> dict:
    from shrink.config import to_dict

    return to_dict(cfg)


# --------------------------------------------------------------------------- the gate step


@dataclass(frozen=True)
class GateResult:
    """The decision, and what the gate step publishes of it (KFP metadata and metrics)."""

    decision: dict

    @property
    def chosen(self) -> str:
        """The chosen candidate's name, or "" when nothing may be promoted."""
        return self.decision["chosen"] or ""

    @property
    def passing(self) -> list[str]:
        """The eligible candidates that pass every check."""
        return [c["name"] for c in self.decision["candidates"] if c["status"] == "pass" and c["eligible"]]

    @property
    def metadata(self) -> dict[str, Any]:
        """The decision artifact's metadata: chosen, passing, policy, closest."""
        return {
            "chosen": self.chosen,
            "passing": self.passing,
            "policy": self.decision["policy"]["name"],
            "closest": (self.decision["closest"] or {}).get("name", ""),
        }

    @property
    def metrics(self) -> dict[str, float]:
        """Candidates judged and passing, and the chosen candidate's headline figures."""
        out: dict[str, float] = {"candidates": len(self.decision["candidates"]), "passing": len(self.passing)}
        if self.chosen:
            summary = next(c for c in self.decision["candidates"] if c["name"] == self.chosen)["summary"]
            for key in ("accuracy", "p50_ms", "p95_ms", "size_mb", "speedup_p50", "size_reduction"):
                if summary.get(key) is not None:
                    out[f"chosen_{key}"] = float(summary[key])
        return out


def _reference_view(reference: dict | None, baselines: Baselines, records: dict[str, Record]) -> dict | None:
    """The reference's figures and every measured candidate's ratios against it; None when none was measured."""
    if reference is None:
        return None
    ref = baselines.reference
    if ref is None:
        return {"usable": False, "problems": list(baselines.reference_problems)}
    return {
        "usable": True,
        "architecture": ref.get("architecture"),
        "display": ref.get("display"),
        "weights": ref.get("weights"),
        "p50_ms": lookup(ref, ("latency_ms", "p50")),
        "p95_ms": lookup(ref, ("latency_ms", "p95")),
        "size_mb": lookup(ref, ("size", "model_mb")),
        "parameters": lookup(ref, ("size", "parameters")),
        "hardware": ref.get("hardware"),
        "ratios": {
            name: ratios(r, ref) for name, r in records.items() if isinstance(r, dict) and not record_problems(r)
        },
    }


def _per_trial(record: Record, index: int) -> Record:
    """An unreadable per-trial record keeps its place in the table under its position in the list."""
    if "error" in record and "@" not in record["candidate"]:
        return {**record, "candidate": f"{record['candidate']}@{index}"}
    return record


def _read_reference(path: str | Path) -> dict | None:
    """The reference record, None when the step measured none (``absent``), ``{}`` (unusable) when unreadable."""
    try:
        record = read_json(path, "reference record")
    except ShrinkError as exc:
        log.warning("%s", exc)
        return {}
    return None if isinstance(record, dict) and "absent" in record else record


def run_gate(
    candidates: dict[str, str | Path],
    production_record: str | Path | None,
    cfg: GateConfig,
    model_name: str,
    decision_path: str | Path,
    report_path: str | Path,
    reference_record: str | Path | None = None,
) -> GateResult:
    """The gate step: read each candidate's benchmark result, decide, write the decision and the report.

    Args:
        candidates: Candidate name -> its benchmark result (a JSON file, or a folder holding
            ``benchmark.json``), for the candidates this run produced; a list for a per-trial
            candidate (the shape search), whose records carry their own ``<name>@<trial>`` names.
            An unreadable one makes that candidate invalid, it does not stop the gate.
        production_record: This run's record of the production model (the benchmark_production
            step), or None; unreadable or absent, the record stored at its promotion is used.
        cfg: The gate section.
        model_name: Registry name of the production model (overrides ``cfg.model_name``).
        decision_path: Where the decision record (JSON) goes.
        report_path: Where the HTML report goes.
        reference_record: This run's ``shrink.reference/v1`` record (the benchmark_reference step), or
            None; an unreadable one is reported as unusable and fails only ``baseline: reference`` goals.

    Returns:
        The decision and what to publish of it.

    Raises:
        ShrinkError: champion/challenger is on but no model name says which production model.
    """
    records = []
    for name, path in candidates.items():
        if isinstance(path, list):
            records += [_per_trial(read_record(p, name, per_trial=True), i) for i, p in enumerate(path)]
        else:
            records.append(read_record(path, name))
    pointer = None
    name = model_name or cfg.model_name
    if cfg.compare_to_production:
        if not name:
            raise ShrinkError(
                "gate.model_name: needed to compare with the production model "
                "(or set gate.compare_to_production: false)"
            )
        pointer = current_production(name, cfg.registry_uri)
        log.info("production: %s", pointer["version"] if pointer else "none yet")
    champion = read_record(production_record, CHAMPION) if production_record is not None else None
    reference = _read_reference(reference_record) if reference_record is not None else None
    decision = decide(records, cfg, pointer, champion, reference)
    Path(decision_path).parent.mkdir(parents=True, exist_ok=True)
    Path(decision_path).write_text(json.dumps(decision, indent=2))
    write_report(decision, records, report_path)
    for line in format_table(decision).splitlines():
        log.info("%s", line)
    return GateResult(decision)
