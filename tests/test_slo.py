from pathlib import Path

import pytest
import yaml

from shrink.errors import ShrinkError
from shrink.slo import GateConfig, gate_config, load_gate_config

DEMO = Path(__file__).resolve().parents[1] / "pipelines" / "configs" / "slo.yaml"


def write(tmp_path, data, name="slo.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def goal(**over):
    base = {"metric": "p95_latency_ms", "direction": "lower_is_better", "kind": "threshold", "value": 10.0}
    return {**base, **over}


def test_demo_slo_file_loads_with_every_issue_goal():
    cfg = load_gate_config(DEMO)
    by_name = {g.label: g for g in cfg.slos}
    # The eight SLOs the issue names, each with an explicit direction and kind.
    for name in (
        "max_p95_latency_ms",
        "max_size_mb",
        "min_accuracy",
        "max_accuracy_drop",
        "min_oos_recall",
        "max_memory_mb",
        "min_throughput_qps",
        "max_class_regression",
    ):
        assert name in by_name, name
    assert by_name["max_accuracy_drop"].baseline == "teacher"
    assert by_name["max_accuracy_drop"].kind == "max_degradation"
    assert by_name["max_class_regression"].metric == "class_accuracy"
    assert cfg.compare_to_production and cfg.policy == "lowest_p95"
    # The file states its production goals, so no built-in default is added.
    assert not any(default for _, default in cfg.goals())


def test_pipeline_config_with_gate_section_loads(tmp_path):
    path = write(tmp_path, {"name": "x", "gate": {"slos": [goal()], "policy": "smallest_size"}})
    cfg = load_gate_config(path)
    assert cfg.policy == "smallest_size" and cfg.slos[0].label == "max_p95_latency_ms"


def test_default_production_goals_only_when_none_written():
    cfg = gate_config({"slos": [goal()]})
    added = [g for g, default in cfg.goals() if default]
    assert {g.metric for g in added} == {"accuracy", "p95_latency_ms"}
    assert all(g.baseline == "production" for g in added)
    assert not [g for g, d in gate_config({"slos": [goal()], "compare_to_production": False}).goals() if d]
    own = goal(kind="max_degradation", value=1.0, baseline="production")
    assert not [g for g, d in gate_config({"slos": [own]}).goals() if d]


def test_typo_key_names_file_and_key(tmp_path):
    path = write(tmp_path, {"slos": [{**goal(), "treshold": 3}]})
    with pytest.raises(ShrinkError, match=rf"{path}\.slos\[0\]: unknown key 'treshold'"):
        load_gate_config(path)
    path = write(tmp_path, {"polcy": "lowest_p95"}, "top.yaml")
    with pytest.raises(ShrinkError, match=rf"{path}: unknown key 'polcy'"):
        load_gate_config(path)


def test_unknown_metric_lists_the_known_ones(tmp_path):
    path = write(tmp_path, {"slos": [goal(metric="p95_latency")]})
    with pytest.raises(ShrinkError, match=r"slos\[0\]\.metric: 'p95_latency' is not one of .*'p95_latency_ms'"):
        load_gate_config(path)


def test_wrong_types_are_named(tmp_path):
    path = write(tmp_path, {"slos": [goal(value="fast")]})
    with pytest.raises(ShrinkError, match=rf"{path}\.slos\[0\]\.value: expected a number, got str 'fast'"):
        load_gate_config(path)
    path = write(tmp_path, {"compare_to_production": "yes"}, "b.yaml")
    with pytest.raises(ShrinkError, match=r"compare_to_production: expected true or false"):
        load_gate_config(path)
    path = write(tmp_path, {"slos": goal()}, "c.yaml")
    with pytest.raises(ShrinkError, match=r"\.slos: expected a list"):
        load_gate_config(path)


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"value": -5.0}, r"slos\[0\]\.value: a p95_latency_ms limit must be > 0, got -5\.0"),
        (
            {"metric": "accuracy", "direction": "higher_is_better", "value": 1.2},
            r"slos\[0\]\.value: accuracy is a fraction in \[0, 1\], got 1\.2",
        ),
        (
            {
                "metric": "accuracy",
                "direction": "higher_is_better",
                "kind": "max_degradation",
                "value": -0.01,
                "baseline": "teacher",
            },
            r"slos\[0\]\.value: must be >= 0",
        ),
        (
            {
                "metric": "accuracy",
                "direction": "higher_is_better",
                "kind": "max_degradation",
                "value": 2.0,
                "baseline": "teacher",
            },
            r"a change of 2\.0 is impossible",
        ),
        (
            {"direction": "higher_is_better"},
            r"slos\[0\]\.direction: 'higher_is_better' contradicts metric 'p95_latency_ms'",
        ),
        ({"baseline": "teacher"}, r"slos\[0\]\.baseline: a threshold is absolute"),
        (
            {"kind": "max_degradation", "value": 1.0},
            r"slos\[0\]\.baseline: a max_degradation goal needs a baseline",
        ),
        (
            {"kind": "percent_min_improvement", "value": 100.0, "baseline": "teacher"},
            r"cannot reduce p95_latency_ms by 100\.0%",
        ),
        ({"batch_size": 8}, r"slos\[0\]\.batch_size: only applies to throughput_qps"),
        ({"value": float("nan")}, r"slos\[0\]\.value: must be a finite number"),
        ({"baseline": "champion"}, r"slos\[0\]\.baseline: 'champion' matches none|'champion' is not one of"),
    ],
)
def test_impossible_values_are_clear_errors(tmp_path, over, message):
    path = write(tmp_path, {"slos": [goal(**over)]})
    with pytest.raises(ShrinkError, match=message) as exc:
        load_gate_config(path)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"max_majority_fraction": 0.0}, r"max_majority_fraction: must be in \(0, 1\]"),
        ({"max_majority_fraction": 1.5}, r"max_majority_fraction: must be in \(0, 1\]"),
        ({"tie_tolerance_percent": -1.0}, r"tie_tolerance_percent: must be in \[0, 100\)"),
        ({"policy": "fastest"}, r"policy: 'fastest' is not one of"),
        ({"registry_bucket": "a/b"}, r"registry_bucket: must be a bucket name"),
        (
            {"slos": [goal(), goal(value=20.0)]},
            r"slos: goal names must be unique; 'max_p95_latency_ms' repeats",
        ),
    ],
)
def test_gate_level_rules(tmp_path, data, message):
    path = write(tmp_path, data)
    with pytest.raises(ShrinkError, match=message):
        load_gate_config(path)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ShrinkError, match="nope.yaml: SLO file not found"):
        load_gate_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("slos: [\n")
    with pytest.raises(ShrinkError, match="bad.yaml: not valid YAML"):
        load_gate_config(bad)


def test_defaults_are_valid_and_round_trip():
    from shrink.config import to_dict

    cfg = GateConfig()
    again = gate_config(to_dict(cfg))
    assert to_dict(again) == to_dict(cfg)
    assert {g.label for g in cfg.slos} == {"max_accuracy_drop", "max_class_regression"}
