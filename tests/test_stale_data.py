"""Data-aware caching: new data at an unchanged source retrains; unchanged data reuses every cached step.

Real kfp.local runs of the DAG's head (fingerprint_data -> prepare_data -> train_teacher, wired
as in pipelines/compression.py, which test_fingerprint_is_wired_into_the_dag checks) on a tiny
CSV dataset, from a local folder and from s3:// on a real SeaweedFS.
"""

import io
import json

import pytest
from kfp import dsl, local

from components.fingerprint_data.component import fingerprint_data
from components.prepare_data.component import prepare_data
from components.train_teacher.component import train_teacher
from pipelines.console import RunConsole

TRAIN = {"epochs": 1, "batch_size": 8, "max_length": 16, "early_stopping_patience": 0, "learning_rate": 1e-3}


@dsl.pipeline
def head(data: dict, teacher: dict) -> dsl.Model:
    fp = fingerprint_data(data=data)
    fp.set_caching_options(enable_caching=False)
    prep = prepare_data(data=data, fingerprint=fp.output)
    return train_teacher(dataset=prep.outputs["dataset"], teacher=teacher).outputs["model"]


def _rows(changed: bool = False) -> dict[str, str]:
    train = [f"what is my balance {i},balance" for i in range(6)] + [f"book a flight {i},book_flight" for i in range(6)]
    if changed:
        train[3] = "how much money do I have,balance"
    test = ["balance please,balance", "fly me to rome,book_flight"]
    return {"train.csv": "text,label\n" + "\n".join(train) + "\n", "test.csv": "text,label\n" + "\n".join(test) + "\n"}


def _run(tmp_path, name, data, teacher):
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / name),
        enable_caching=True,
        cache_root=str(tmp_path / "cache"),
        raise_on_error=True,
    )
    with RunConsole(tmp_path / name / "logs", out=io.StringIO()) as console:
        model = head(data=data, teacher=teacher).output
    steps = {s.task: s for s in console.steps}
    dataset = next((tmp_path / name).rglob("prepare-data/dataset"), None)  # None: prepare_data was cached
    fingerprint = json.loads((dataset / "shrink-data.json").read_text())["source_fingerprint"] if dataset else None
    return steps, model.uri, fingerprint


def _three_runs(tmp_path, data, teacher, write):
    write(changed=False)
    first, model1, fp1 = _run(tmp_path, "first", data, teacher)
    assert not first["train-teacher"].cached and model1.startswith(str(tmp_path / "first"))
    assert fp1

    write(changed=True)  # one training row differs; the source is the same
    second, model2, fp2 = _run(tmp_path, "second", data, teacher)
    assert not second["fingerprint-data"].cached
    assert not second["prepare-data"].cached, "new data at the same source was not prepared again"
    assert not second["train-teacher"].cached, "the teacher was reused although the data changed"
    assert model2.startswith(str(tmp_path / "second"))
    assert fp2 and fp2 != fp1

    third, model3, fp3 = _run(tmp_path, "third", data, teacher)  # unchanged since the second run
    assert not third["fingerprint-data"].cached  # always taken
    assert third["prepare-data"].cached and third["train-teacher"].cached
    assert model3 == model2 and fp3 is None  # no new dataset: the second run's is reused


def test_changed_local_data_retrains_and_unchanged_data_is_cached(tmp_path, tiny_model_dir):
    source = tmp_path / "data"
    source.mkdir()

    def write(changed):
        for name, body in _rows(changed).items():
            (source / name).write_text(body)

    data = {"source": str(source), "validation_fraction": 0.5}
    _three_runs(tmp_path / "runs", data, {"base_model": str(tiny_model_dir), "train": TRAIN}, write)


def test_changed_s3_data_retrains_and_unchanged_data_is_cached(tmp_path, seaweed, tiny_model_dir):
    from shrink import storage

    s3 = storage.client()

    def write(changed):
        for name, body in _rows(changed).items():
            s3.put_object(Bucket="shrink-test", Key=f"stale-data/{name}", Body=body.encode())

    data = {"source": "s3://shrink-test/stale-data/", "validation_fraction": 0.5}
    _three_runs(tmp_path / "runs", data, {"base_model": str(tiny_model_dir), "train": TRAIN}, write)


def test_fingerprint_is_wired_into_the_dag(tmp_path):
    """In the real DAG, prepare_data's fingerprint comes from the uncached fingerprint_data task."""
    import yaml

    from pipelines.compression import compile_pipeline
    from shrink.config import load_pipeline_config
    from tests.factories import DEMO_CONFIG as DEMO

    out = tmp_path / "p.yaml"
    compile_pipeline(load_pipeline_config(DEMO), str(out))
    tasks = next(yaml.safe_load_all(out.read_text()))["root"]["dag"]["tasks"]
    param = tasks["prepare-data"]["inputs"]["parameters"]["fingerprint"]["taskOutputParameter"]
    assert param["producerTask"] == "fingerprint-data"
    assert tasks["fingerprint-data"]["cachingOptions"] == {}  # enableCache absent: off
    assert tasks["prepare-data"]["cachingOptions"] == {"enableCache": True}


def test_fingerprint_follows_content_not_names(tmp_path):
    from shrink.fingerprint import fingerprint_source

    (tmp_path / "a.csv").write_text("x")
    before = fingerprint_source(str(tmp_path))
    (tmp_path / ".DS_Store").write_text("noise")  # hidden files are not data
    assert fingerprint_source(str(tmp_path)) == before
    (tmp_path / "a.csv").write_text("y")
    assert fingerprint_source(str(tmp_path)).digest != before.digest
    with pytest.raises(Exception, match="dataset not found"):
        fingerprint_source(str(tmp_path / "none"))
