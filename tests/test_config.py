import pytest

from shrink.config import DataConfig, PipelineConfig, SearchConfig, from_dict, load_yaml
from shrink.errors import ShrinkError


def test_unknown_key_is_named():
    with pytest.raises(ShrinkError, match=r"config\.data: unknown key 'max_per_clas'"):
        from_dict(
            PipelineConfig, {"name": "x", "model_name": "m", "data": {"source": "a", "max_per_clas": 3}}
        )


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
