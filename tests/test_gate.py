import json
import math
import random
import re

import pytest
from kfp.dsl import HTML, Artifact, Metrics

from shrink.errors import ShrinkError
from shrink.gate import decide, evaluate_goal, rank
from shrink.slo import Goal, gate_config
from tests.factories import record


def cfg(*goals, **over):
    return gate_config({"slos": list(goals), "compare_to_production": False, **over})


def g(metric, direction, kind, value, baseline=None, **extra):
    out = {"metric": metric, "direction": direction, "kind": kind, "value": value, **extra}
    if baseline:
        out["baseline"] = baseline
    return out


def entry(decision, name):
    return next(c for c in decision["candidates"] if c["name"] == name)


def check(decision, name, slo):
    return next(c for c in entry(decision, name)["checks"] if c["slo"] == slo)


# --------------------------------------------------------------------------- each SLO kind

LOW, HIGH = "lower_is_better", "higher_is_better"
KINDS = [
    # goal, teacher overrides, passing candidate, failing candidate, expected limit
    (g("p95_latency_ms", LOW, "threshold", 10.0), {}, {"p95": 9.9}, {"p95": 10.5}, 10.0),
    (g("size_mb", LOW, "threshold", 50.0), {}, {"size": 49.0}, {"size": 51.0}, 50.0),
    (g("memory_mb", LOW, "threshold", 500.0), {}, {"mem": 450.0}, {"mem": 600.0}, 500.0),
    (g("oos_recall", HIGH, "threshold", 0.5), {}, {"oos_recall": 0.55}, {"oos_recall": 0.45}, 0.5),
    (
        g("throughput_qps", HIGH, "threshold", 450.0, batch_size=32),
        {},
        {"qps": {"8": 100.0, "32": 500.0}},
        {"qps": {"8": 900.0, "32": 400.0}},
        450.0,
    ),
    (
        g("accuracy", HIGH, "max_degradation", 0.02, "teacher"),
        {"acc": 0.92},
        {"acc": 0.905},
        {"acc": 0.895},
        0.90,
    ),
    (
        g("size_mb", LOW, "min_improvement", 40.0, "teacher"),
        {"size": 90.0},
        {"size": 45.0},
        {"size": 55.0},
        50.0,
    ),
    (
        g("p95_latency_ms", LOW, "percent_max_degradation", 10.0, "teacher"),
        {"p95": 10.0},
        {"p95": 10.9},
        {"p95": 11.2},
        11.0,
    ),
    (
        g("p95_latency_ms", LOW, "percent_min_improvement", 30.0, "teacher"),
        {"p95": 10.0},
        {"p95": 6.9},
        {"p95": 7.5},
        7.0,
    ),
    (
        g("accuracy", HIGH, "percent_max_degradation", 5.0, "teacher"),
        {"acc": 0.80},
        {"acc": 0.77},
        {"acc": 0.75},
        0.76,
    ),
]


@pytest.mark.parametrize(
    ("goal", "teacher", "good", "bad", "limit"),
    KINDS,
    ids=[f"{k[0]['kind']}-{k[0]['metric']}" for k in KINDS],
)
def test_each_slo_kind_passes_and_fails(goal, teacher, good, bad, limit):
    c = cfg(goal)
    d = decide([record("teacher", **teacher), record("good", **good), record("bad", **bad)], c)
    name = c.slos[0].label
    ok, ko = check(d, "good", name), check(d, "bad", name)
    assert ok["passed"] and not ko["passed"]
    assert ok["limit"] == pytest.approx(limit) and ko["limit"] == pytest.approx(limit)
    assert entry(d, "good")["status"] == "pass" and entry(d, "bad")["status"] == "fail"
    assert d["chosen"] == "good"
    assert any(name in r for r in entry(d, "bad")["reasons"])
    if goal.get("baseline"):
        assert ok["baseline_value"] is not None and ok["resolved"].startswith("teacher ")


def test_limit_exactly_met_passes_despite_float_rounding():
    d = decide(
        [record("teacher", acc=0.9), record("s", acc=0.89)],
        cfg(g("accuracy", HIGH, "max_degradation", 0.01, "teacher")),
    )
    assert d["chosen"] == "s"


def test_relative_goal_is_resolved_against_this_runs_teacher():
    goal = g("accuracy", HIGH, "max_degradation", 0.02, "teacher", name="max_accuracy_drop")
    student = record("student", acc=0.87)
    weak = decide([record("teacher", acc=0.88), student], cfg(goal))
    strong = decide([record("teacher", acc=0.95), student], cfg(goal))
    assert weak["chosen"] == "student" and strong["chosen"] is None
    c = check(strong, "student", "max_accuracy_drop")
    # The decision keeps the goal as written and the absolute limit it became.
    assert (c["kind"], c["value"], c["baseline"], c["baseline_value"]) == (
        "max_degradation",
        0.02,
        "teacher",
        0.95,
    )
    assert c["limit"] == pytest.approx(0.93) and c["measured"] == 0.87
    assert "teacher 0.95 - 0.02" in c["resolved"]


def test_class_regression_checks_every_class():
    teacher = record("teacher", per_class={"balance": 0.9, "oos": 0.6, "transfer": 0.95, "weather": 1.0})
    fine = record("fine", per_class={"balance": 0.85, "oos": 0.55, "transfer": 0.9, "weather": 0.95})
    broken = record("broken", acc=0.95, per_class={"balance": 1.0, "oos": 0.45, "transfer": 1.0, "weather": 1.0})
    d = decide(
        [teacher, fine, broken],
        cfg(g("class_accuracy", HIGH, "max_degradation", 0.10, "teacher", name="max_class_regression")),
    )
    assert check(d, "fine", "max_class_regression")["passed"]
    bad = check(d, "broken", "max_class_regression")
    assert not bad["passed"] and bad["worst_class"] == "oos" and bad["failing_classes"] == ["oos"]
    assert bad["limit"] == pytest.approx(0.5) and bad["measured"] == 0.45
    assert d["chosen"] == "fine"  # higher overall accuracy does not hide one collapsed intent


def test_class_regression_fails_a_class_only_beyond_its_sampling_noise():
    """30 test queries per intent: 5 fewer right is within noise, 16 fewer is a broken intent."""
    goal = g("class_accuracy", HIGH, "max_degradation", 0.15, "teacher", name="max_class_regression")
    support = {"balance": 30, "oos": 1000, "transfer": 30, "weather": 30}

    def rec(name, **per_class):
        r = record(
            name, per_class={"balance": 28 / 30, "oos": 0.6, "transfer": 28 / 30, "weather": 28 / 30, **per_class}
        )
        r["accuracy"]["per_class_support"] = support
        return r

    teacher = rec("teacher")
    unlucky = rec("unlucky", balance=23 / 30)  # limit 28/30 - 0.15 = 0.783; 23/30 = 0.767
    broken = rec("broken", transfer=12 / 30)
    oos_worse = rec("oos_worse", oos=0.40)  # 1000 queries: 5 points under the limit is not noise
    d = decide([teacher, unlucky, broken, oos_worse], cfg(goal))
    ok = check(d, "unlucky", "max_class_regression")
    assert ok["passed"] and set(ok["below_limit_within_noise"]) == {"balance"}
    assert ok["below_limit_within_noise"]["balance"]["p_value"] > 0.05 / 4 and "exact binomial" in ok["significance"]
    bad = check(d, "broken", "max_class_regression")
    assert not bad["passed"] and bad["failing_classes"] == ["transfer"] and bad["worst_class"] == "transfer"
    assert "significantly below" in bad["reason"]
    assert check(d, "oos_worse", "max_class_regression")["failing_classes"] == ["oos"]
    # class_regression_alpha 0: every class is compared flatly, as for records without support counts.
    flat = decide([teacher, unlucky], cfg(goal, class_regression_alpha=0.0))
    assert check(flat, "unlucky", "max_class_regression")["failing_classes"] == ["balance"]


def test_binomial_cdf_matches_hand_computation():
    from shrink.gate import _binomial_cdf

    assert _binomial_cdf(1, 2, 0.5) == pytest.approx(0.75)
    assert _binomial_cdf(0, 3, 0.5) == pytest.approx(0.125)
    expected = sum(math.comb(4, i) * 0.25**i * 0.75 ** (4 - i) for i in range(3))
    assert _binomial_cdf(2, 4, 0.25) == pytest.approx(expected)
    assert _binomial_cdf(30, 30, 0.9) == pytest.approx(1.0) and _binomial_cdf(5, 30, 1.0) == 0.0


def test_class_absent_from_test_split_is_skipped():
    goal = g("class_accuracy", HIGH, "max_degradation", 0.10, "teacher", name="max_class_regression")
    teacher = record("teacher", per_class={"balance": 0.9, "oos": None, "transfer": 0.9, "weather": 0.9})
    ok = record("ok", per_class={"balance": 0.85, "oos": None, "transfer": 0.9, "weather": 0.9})
    gone = record("gone", per_class={"balance": 0.85, "oos": None, "transfer": 0.9})
    d = decide([teacher, ok, gone], cfg(goal))
    assert check(d, "ok", "max_class_regression")["passed"]
    assert check(d, "gone", "max_class_regression")["failing_classes"] == ["weather"]


# --------------------------------------------------------------------------- champion / challenger


def production(rec, version="20260101T000000Z-abcdef12"):
    return {
        "version": version,
        "uri": f"s3://shrink-models/m/{version}/",
        "content_hash": "prod-hash",
        "promoted_at": "2026-01-01T00:00:00Z",
        "previous": None,
        "benchmark": rec,
    }


def test_candidate_must_not_be_worse_than_production():
    records = [record("teacher", acc=0.92), record("student", acc=0.91, p95=5.0)]
    goals = [g("accuracy", HIGH, "max_degradation", 0.02, "teacher")]
    champion = record("prod", acc=0.915, p95=5.0)
    d = decide(records, gate_config({"slos": goals}), production(champion))
    c = check(d, "student", "no_accuracy_loss_vs_production")
    assert c["default"] and not c["passed"] and c["baseline_value"] == 0.915
    assert d["chosen"] is None and d["production"]["version"].startswith("20260101")
    # Same candidate, a weaker champion: promoted.
    d = decide(records, gate_config({"slos": goals}), production(record("prod", acc=0.90, p95=5.0)))
    assert d["chosen"] == "student"
    # Slower than production by more than 10% on p95: refused.
    d = decide(records, gate_config({"slos": goals}), production(record("prod", acc=0.90, p95=4.0)))
    assert not check(d, "student", "p95_within_10pct_of_production")["passed"] and d["chosen"] is None
    # The switch turns it off; nothing in production yet is not a failure.
    off = decide(records, gate_config({"slos": goals, "compare_to_production": False}), production(champion))
    assert off["chosen"] == "student" and not off["production"]["compared"]
    first = decide(records, gate_config({"slos": goals}), None)
    assert first["chosen"] == "student"
    assert "nothing in production yet" in check(first, "student", "no_accuracy_loss_vs_production")["reason"]


def test_production_on_other_hardware_or_without_record_fails_closed():
    records = [record("teacher"), record("student", acc=0.9)]
    d = decide(records, gate_config({"slos": []}), production(record("prod", acc=0.8, hw="hw-other")))
    assert check(d, "student", "no_accuracy_loss_vs_production")["passed"]  # accuracy: same test set
    lat = check(d, "student", "p95_within_10pct_of_production")
    assert not lat["passed"] and "hardware mismatch" in lat["reason"] and d["chosen"] is None
    d = decide(records, gate_config({"slos": []}), production(None))
    assert d["chosen"] is None
    assert "production benchmark unusable" in check(d, "student", "no_accuracy_loss_vs_production")["reason"]


# --------------------------------------------------------------------------- collapse, policy, ties


def test_collapsed_model_never_passes():
    records = [
        record("teacher", acc=0.8),
        record("collapsed", acc=0.82, majority=0.8, p95=1.0),
        record("honest", acc=0.8, majority=0.3, p95=3.0),
    ]
    d = decide(records, cfg())
    c = check(d, "collapsed", "collapse")
    assert not c["passed"] and c["measured"] == 0.8 and "collapse" in c["reason"]
    assert d["chosen"] == "honest"
    assert decide(records, cfg(max_majority_fraction=0.9))["chosen"] == "collapsed"


def test_policies_choose_differently():
    records = [
        record("teacher", acc=0.92, p95=10.0, size=90.0),
        record("fast", acc=0.90, p95=2.0, size=40.0, mem=300.0, qps={"32": 800.0}),
        record("small", acc=0.91, p95=3.0, size=20.0, mem=350.0, qps={"32": 700.0}),
        record("accurate", acc=0.92, p95=4.0, size=45.0, mem=200.0, qps={"32": 900.0}),
    ]
    chosen = {
        p: decide(records, cfg(policy=p))["chosen"]
        for p in ("lowest_p95", "smallest_size", "highest_accuracy", "highest_throughput", "lowest_memory")
    }
    assert chosen == {
        "lowest_p95": "fast",
        "smallest_size": "small",
        "highest_accuracy": "accurate",
        "highest_throughput": "accurate",
        "lowest_memory": "accurate",
    }


def test_ties_are_broken_deterministically():
    records = [
        record("teacher", p95=10.0),
        record("b", acc=0.90, p95=5.0, size=30.0),
        record("a", acc=0.90, p95=5.0, size=30.0),
        record("c", acc=0.91, p95=5.0, size=60.0),
        record("d", acc=0.90, p95=5.0, size=20.0),
    ]
    for seed in range(3):
        shuffled = records[:]
        random.Random(seed).shuffle(shuffled)
        d = decide(shuffled, cfg())
        # Same p95: higher accuracy first, then smaller size, then name.
        assert d["ranking"] == ["c", "d", "a", "b"]
        assert "tied" in d["reason"]


def test_tie_tolerance_lets_accuracy_decide_within_noise():
    records = [
        record("teacher", p95=10.0),
        record("quick", acc=0.88, p95=5.0),
        record("better", acc=0.90, p95=5.1),
    ]
    assert decide(records, cfg())["chosen"] == "quick"
    assert decide(records, cfg(tie_tolerance_percent=3.0))["chosen"] == "better"
    assert decide(records, cfg(tie_tolerance_percent=1.0))["chosen"] == "quick"


def test_rank_puts_missing_values_last():
    passing = [
        {"name": "x", "summary": {"p95_ms": None, "accuracy": 0.9, "size_mb": 1.0}},
        {"name": "y", "summary": {"p95_ms": 9.0, "accuracy": 0.9, "size_mb": 1.0}},
    ]
    assert rank(passing, "lowest_p95")[0] == ["y", "x"]


# --------------------------------------------------------------------------- refusing to compare


def test_hardware_mismatch_is_not_compared():
    records = [record("teacher", p95=10.0), record("elsewhere", p95=1.0, hw="hw-b"), record("here", p95=4.0)]
    d = decide(records, cfg(g("p95_latency_ms", LOW, "threshold", 20.0)))
    e = entry(d, "elsewhere")
    assert e["status"] == "fail" and e["checks"] == []
    assert e["reasons"][0].startswith("hardware mismatch")
    assert d["chosen"] == "here"


def test_dataset_mismatch_is_not_compared():
    d = decide([record("teacher"), record("other", data="data-2", acc=0.99)], cfg())
    assert entry(d, "other")["reasons"][0].startswith("dataset mismatch") and d["chosen"] is None


@pytest.mark.parametrize(
    ("broken", "why"),
    [
        ({"candidate": "s", "error": "results/s.json: benchmark result unreadable"}, "unreadable"),
        ({**record("s"), "latency_ms": {}}, "latency_ms.p50 is missing"),
        (
            {**record("s"), "accuracy": {**record("s")["accuracy"], "accuracy": math.nan}},
            "not a finite number",
        ),
        ({**record("s"), "accuracy": {**record("s")["accuracy"], "accuracy": 1.5}}, r"outside \[0, 1\]"),
        ({**record("s"), "schema": "something/v0"}, "schema is 'something/v0'"),
        ({**record("s"), "hardware": {}}, "hardware.fingerprint is missing"),
    ],
)
def test_missing_or_invalid_benchmark_is_not_promoted(broken, why):
    d = decide([record("teacher"), broken, record("ok", acc=0.89)], cfg())
    e = entry(d, "s")
    assert e["status"] == "invalid" and not e["checks"]
    assert any(re.search(why, r) for r in e["reasons"]), e["reasons"]
    assert d["chosen"] == "ok"


def test_missing_teacher_fails_closed():
    d = decide([record("student")], cfg())
    assert d["chosen"] is None and "teacher baseline is unusable" in d["reason"]
    assert not d["baseline"]["usable"]


def test_none_passes_names_the_closest():
    goals = [
        g("p95_latency_ms", LOW, "threshold", 3.0),
        g("size_mb", LOW, "threshold", 30.0),
        g("accuracy", HIGH, "threshold", 0.85),
    ]
    records = [
        record("teacher", p95=10.0),
        record("far", p95=9.0, size=80.0, acc=0.7),
        record("near", p95=3.2, size=25.0, acc=0.9),
        record("nearer", p95=3.1, size=25.0, acc=0.9),
        record("invalid", acc=None),
    ]
    d = decide(records, cfg(*goals))
    assert d["chosen"] is None and d["ranking"] == []
    assert d["closest"]["name"] == "nearer" and d["closest"]["failed"] == ["max_p95_latency_ms"]
    assert "nothing promoted" in d["reason"] and "closest: nearer" in d["reason"]


def test_teacher_is_baseline_unless_allowed():
    records = [record("teacher", acc=0.9, p95=2.0), record("student", acc=0.9, p95=3.0)]
    d = decide(records, cfg())
    assert entry(d, "teacher")["status"] == "baseline" and d["chosen"] == "student"
    assert decide(records, cfg(allow_teacher=True))["chosen"] == "teacher"


def test_oos_goal_not_applicable_without_oos_label():
    labels = ["a", "b"]
    records = [record("teacher", has_oos=False, labels=labels), record("s", has_oos=False, labels=labels)]
    d = decide(records, cfg(g("oos_recall", HIGH, "threshold", 0.5)))
    assert d["chosen"] == "s" and "no oos label" in check(d, "s", "min_oos_recall")["reason"]


def test_unmeasured_metric_fails():
    rec = record("s")
    del rec["memory"]
    d = decide([record("teacher"), rec], cfg(g("memory_mb", LOW, "threshold", 1000.0)))
    assert d["chosen"] is None and "memory_mb was not measured" in check(d, "s", "max_memory_mb")["reason"]


def test_duplicate_candidates_are_an_error():
    with pytest.raises(ShrinkError, match="candidate 's' appears more than once"):
        decide([record("teacher"), record("s"), record("s")], cfg())


def test_evaluate_goal_direction_matters():
    goal = Goal("accuracy", HIGH, "min_improvement", 0.01, baseline="teacher")
    res = evaluate_goal(goal, record("s", acc=0.905), {"teacher": record("teacher", acc=0.9)})
    assert not res["passed"] and res["limit"] == pytest.approx(0.91)


# --------------------------------------------------------------------------- component


def write_results(tmp_path, records):
    arts = {}
    for rec in records:
        path = tmp_path / "bench" / f"{rec['candidate']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rec))
        arts[rec["candidate"]] = Artifact(uri=str(path))
    return arts


def test_gate_component_writes_decision_report_and_metrics(tmp_path):
    from components.gate.component import gate

    arts = write_results(
        tmp_path,
        [
            record("teacher", p95=10.0),
            record("student", p95=6.0),
            record("ort_int8_dynamic", p95=3.0, size=23.0),
        ],
    )
    broken = tmp_path / "bench" / "onnx_fp32.json"
    broken.write_text("{not json")
    decision, report, metrics = (
        Artifact(uri=str(tmp_path / "decision.json")),
        HTML(uri=str(tmp_path / "report.html")),
        Metrics(uri=str(tmp_path / "m")),
    )
    chosen = gate.python_func(
        teacher=arts["teacher"],
        student=arts["student"],
        ort_int8_dynamic=arts["ort_int8_dynamic"],
        onnx_fp32=Artifact(uri=str(broken)),
        gate={"compare_to_production": False},
        decision=decision,
        report=report,
        metrics=metrics,
    )
    assert chosen == "ort_int8_dynamic"
    saved = json.loads((tmp_path / "decision.json").read_text())
    assert saved["chosen"] == "ort_int8_dynamic"
    assert entry(saved, "onnx_fp32")["status"] == "invalid"
    assert "unreadable" in entry(saved, "onnx_fp32")["reasons"][0]
    assert "<table" in (tmp_path / "report.html").read_text()
    assert metrics.metadata["passing"] == 2 and metrics.metadata["chosen_p95_ms"] == 3.0
    assert decision.metadata["chosen"] == "ort_int8_dynamic"


def test_gate_component_needs_model_name_for_champion_challenger(tmp_path, capsys):
    from components.gate.component import gate

    arts = write_results(tmp_path, [record("teacher"), record("student")])
    with pytest.raises(SystemExit) as exc:
        gate.python_func(
            teacher=arts["teacher"],
            student=arts["student"],
            gate={},
            decision=Artifact(uri=str(tmp_path / "d.json")),
            report=HTML(uri=str(tmp_path / "r.html")),
            metrics=Metrics(uri=str(tmp_path / "m")),
        )
    assert exc.value.code == 3  # shrink.kfp_io.EXIT_EXPECTED: a ShrinkError
    assert "gate.model_name: needed to compare with the production model" in capsys.readouterr().err


def test_production_model_re_measured_in_this_run_is_the_champion():
    """An unchanged production model timed slower today is compared with today's figures, not its old ones."""
    goals = [g("accuracy", HIGH, "max_degradation", 0.02, "teacher")]
    stored = record("prod", acc=0.90, p95=4.0)  # measured on a faster day
    today = record("ort", acc=0.90, p95=5.0, content_hash="prod-hash")  # the same artifact, timed now
    challenger = record("student", acc=0.90, p95=5.3)  # 6% slower than today's champion, 33% than the stored one
    records = [record("teacher", acc=0.91), today, challenger]
    d = decide(records, gate_config({"slos": goals}), production(stored))
    assert d["production"]["measured"].startswith("in this run")
    lat = check(d, "student", "p95_within_10pct_of_production")
    assert lat["passed"] and lat["baseline_value"] == 5.0
    assert check(d, "ort", "p95_within_10pct_of_production")["passed"]
    assert next(e for e in d["candidates"] if e["name"] == "ort")["in_production"]
    # Without the champion among the candidates, the stored record is the baseline: 5.3 > 4.0 * 1.1 fails.
    d = decide([record("teacher", acc=0.91), challenger], gate_config({"slos": goals}), production(stored))
    assert d["production"]["measured"].startswith("stored record")
    lat = check(d, "student", "p95_within_10pct_of_production")
    assert not lat["passed"] and lat["baseline_value"] == 4.0 and d["chosen"] is None


def test_champion_measured_by_this_run_is_preferred_and_matched_by_hash():
    """The benchmark_production step's record beats both a same-hash candidate and the stored record."""
    goals = [g("accuracy", HIGH, "max_degradation", 0.02, "teacher")]
    stored = record("prod", acc=0.90, p95=4.0)  # an old, faster day
    champion = record("production", acc=0.90, p95=5.6, content_hash="prod-hash")  # re-measured today
    challenger = record("student", acc=0.90, p95=6.0)  # 7% slower than today's champion, 50% than the stored
    records = [record("teacher", acc=0.91), challenger]
    d = decide(records, gate_config({"slos": goals}), production(stored), champion)
    assert d["production"]["measured"] == "in this run, by the benchmark_production step"
    assert d["production"]["summary"]["p95_ms"] == 5.6
    lat = check(d, "student", "p95_within_10pct_of_production")
    assert lat["passed"] and lat["baseline_value"] == 5.6 and d["chosen"] == "student"
    assert "production" not in {e["name"] for e in d["candidates"]}  # the baseline, never a candidate
    # A candidate that is the production artifact is judged by its own record, and so is everyone else:
    # a second timing of the same model would let it fail against itself by noise.
    same = record("ort", acc=0.90, p95=5.8, content_hash="prod-hash")
    d = decide([*records, same], gate_config({"slos": goals}), production(stored), champion)
    assert d["production"]["measured"] == "in this run, as candidate 'ort'"
    assert check(d, "student", "p95_within_10pct_of_production")["baseline_value"] == 5.8
    assert check(d, "ort", "p95_within_10pct_of_production")["passed"]
    # The alias moved between the step and the gate: the record is of another model and is not used.
    moved = record("production", acc=0.90, p95=5.6, content_hash="older-hash")
    d = decide(records, gate_config({"slos": goals}), production(stored), moved)
    assert d["production"]["measured"].startswith("stored record")
    assert "of another model" in d["production"]["not_measured"]
    assert not check(d, "student", "p95_within_10pct_of_production")["passed"]  # 6.0 > 4.0 * 1.1
    # Nothing to measure (first run): the absent record is ignored quietly.
    absent = {"candidate": "production", "absent": "nothing in production yet"}
    d = decide(records, gate_config({"slos": goals}), None, absent)
    assert d["production"] is None and d["chosen"] == "student"
    # A fresh champion makes a missing stored record harmless (it would otherwise fail closed).
    d = decide(records, gate_config({"slos": goals}), production(None), champion)
    assert d["chosen"] == "student" and "problems" not in d["production"]
    # Re-measured on other hardware than the teacher: not compared, fail closed.
    elsewhere = record("production", acc=0.90, p95=5.6, content_hash="prod-hash", hw="hw-other")
    d = decide(records, gate_config({"slos": goals}), production(stored), elsewhere)
    lat = check(d, "student", "p95_within_10pct_of_production")
    assert not lat["passed"] and "hardware mismatch" in lat["reason"]
