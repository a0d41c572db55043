import json

import pytest
from kfp.dsl import Dataset, Metrics

from components.prepare_data.component import prepare_data
from tests.factories import SLICE_LABELS


def test_prepare_data_component(tmp_path, clinc_dir):
    ds = Dataset(uri=str(tmp_path / "dataset"))
    metrics = Metrics(uri=str(tmp_path / "metrics"))
    prepare_data.python_func(
        data={"source": str(clinc_dir), "labels": SLICE_LABELS, "max_per_class": 10},
        dataset=ds,
        metrics=metrics,
    )
    info = json.loads((tmp_path / "dataset" / "shrink-data.json").read_text())
    assert info["label_names"] == sorted(SLICE_LABELS)
    assert metrics.metadata["labels"] == len(SLICE_LABELS)
    assert ds.metadata["train_examples"] == info["counts"]["train"]


def test_prepare_data_component_bad_config_exits_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        prepare_data.python_func(
            data={"source": "x", "max_per_clas": 1},
            dataset=Dataset(uri=str(tmp_path / "d")),
            metrics=Metrics(uri=str(tmp_path / "m")),
        )
    assert exc.value.code == 3  # shrink.kfp_io.EXIT_EXPECTED: a ShrinkError
    assert "error: data: unknown key 'max_per_clas'" in capsys.readouterr().err
