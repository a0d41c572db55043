import pytest
import yaml

from shrink.config import (
    DataConfig,
    PipelineConfig,
    SearchConfig,
    from_dict,
    load_pipeline_config,
    load_yaml,
    parse_trial,
)
from shrink.errors import ShrinkError
from shrink.slo import load_gate_config


def test_unknown_key_is_named():
    with pytest.raises(ShrinkError, match=r"config\.data: unknown key 'max_per_clas'"):
        from_dict(PipelineConfig, {"name": "x", "model_name": "m", "data": {"source": "a", "max_per_clas": 3}})


def test_wrong_type_is_named():
    with pytest.raises(ShrinkError, match=r"teacher\.train\.epochs: expected an integer"):
        from_dict(
            PipelineConfig,
            {
                "name": "x",
                "model_name": "m",
                "data": {"source": "a"},
                "teacher": {"train": {"epochs": "four"}},
            },
        )


def test_value_rules():
    with pytest.raises(ShrinkError, match="alpha must be in"):
        from_dict(SearchConfig, {"alpha": [1.5]})
    with pytest.raises(ShrinkError, match="search space is empty"):
        from_dict(SearchConfig, {"temperature": []})
    with pytest.raises(ShrinkError, match="validation_fraction"):
        from_dict(DataConfig, {"source": "x", "validation_fraction": 1.0})


def test_search_grid_is_every_combination():
    grid = from_dict(SearchConfig, {"alpha": [0.3, 0.7], "temperature": [2, 4], "learning_rate": [1e-4]})
    assert len(grid.trials()) == 4
    assert {t["alpha"] for t in grid.trials()} == {0.3, 0.7}


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ShrinkError, match="bad.yaml: not valid YAML"):
        load_yaml(PipelineConfig, bad)
    with pytest.raises(ShrinkError, match="missing.yaml: config file not found"):
        load_yaml(PipelineConfig, tmp_path / "missing.yaml")


def test_every_yaml_reader_fails_alike(tmp_path):
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("gate: [unclosed\n")
    for load in (lambda p: load_yaml(PipelineConfig, p), load_pipeline_config, load_gate_config):
        with pytest.raises(ShrinkError, match=r"list\.yaml: expected a mapping, got list \['a', 'b'\]"):
            load(listy)
        with pytest.raises(ShrinkError, match=r"bad\.yaml: not valid YAML: .* \(line 2, column 1\)"):
            load(bad)
    with pytest.raises(ShrinkError, match="missing.yaml: SLO file not found"):
        load_gate_config(tmp_path / "missing.yaml")


def test_pipeline_config_reads_its_slo_file(tmp_path):
    base = {"name": "p", "model_name": "m", "data": {"source": "x"}}
    cfg = tmp_path / "p.yaml"
    cfg.write_text(yaml.safe_dump({**base, "gate": "slo.yaml"}))
    with pytest.raises(ShrinkError, match=r"p\.yaml: gate names the SLO file .*slo\.yaml, which does not exist"):
        load_pipeline_config(cfg)
    (tmp_path / "slo.yaml").write_text("policy: smallest_size\n")
    assert load_pipeline_config(cfg).gate == {"policy": "smallest_size"}
    (tmp_path / "slo.yaml").write_text("policy: fastest\n")
    with pytest.raises(ShrinkError, match=r"p\.yaml \(gate: .*slo\.yaml\)\.gate\.policy: 'fastest' is not one of"):
        load_pipeline_config(cfg)


def test_a_trial_and_the_search_grid_follow_the_same_rules():
    assert parse_trial({"alpha": 0.5, "temperature": "2", "learning_rate": 1e-4}) == (0.5, 2.0, 1e-4)
    with pytest.raises(ShrinkError, match=r"trial\.alpha: 1\.5 must be in \[0, 1\] \(1 = no teacher"):
        parse_trial({"alpha": 1.5, "temperature": 2.0, "learning_rate": 1e-4})
    with pytest.raises(ShrinkError, match=r"search\.alpha: every alpha must be in \[0, 1\] \(1 = no teacher.*got 1\.5"):
        from_dict(SearchConfig, {"alpha": [0.5, 1.5]}, "search")
    with pytest.raises(ShrinkError, match=r"trial\.temperature: 0\.0 must be > 0"):
        parse_trial({"alpha": 0.5, "temperature": 0.0, "learning_rate": 1e-4})
    with pytest.raises(ShrinkError, match=r"search\.temperature: every temperature must be > 0, got 0\.0"):
        from_dict(SearchConfig, {"temperature": [0.0]}, "search")
    with pytest.raises(ShrinkError, match=r"unknown: \['beta'\], missing: \['learning_rate'\]"):
        parse_trial({"alpha": 0.5, "temperature": 2.0, "beta": 1})
    with pytest.raises(ShrinkError, match="must be numbers"):
        parse_trial({"alpha": "half", "temperature": 2.0, "learning_rate": 1e-4})
    with pytest.raises(ShrinkError, match=r"search\.select_tolerance: 1\.0 must be in \[0, 1\)"):
        from_dict(SearchConfig, {"select_tolerance": 1.0}, "search")
