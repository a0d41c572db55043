import json

import pytest
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Metrics, Model

from components.benchmark.component import benchmark

SMALL = {
    "warmup": 5,
    "latency_samples": 50,
    "batch_sizes": [8],
    "throughput_queries": 16,
    "bootstrap_resamples": 100,
    "instance_price_per_hour": 0.36,
}


def _outputs(tmp_path):
    return (
        Artifact(uri=str(tmp_path / "result.json")),
        Metrics(uri=str(tmp_path / "metrics")),
        ClassificationMetrics(uri=str(tmp_path / "confusion")),
        Model(uri=str(tmp_path / "calibrated")),
    )


def _bench(outputs, model, clinc_slice, oos):
    """Run the component on ``model`` as the DAG would for candidate ``student``, into ``outputs`` (_outputs)."""
    result, metrics, confusion, calibrated = outputs
    benchmark.python_func(
        model=Model(uri=str(model)),
        dataset=Dataset(uri=str(clinc_slice)),
        benchmark=SMALL,
        candidate="student",
        oos=oos,
        result=result,
        metrics=metrics,
        confusion=confusion,
        calibrated=calibrated,
    )
    return outputs


def test_benchmark_component_on_the_tiny_model(tmp_path, tiny_artifact, clinc_slice):
    from shrink.artifact import read_meta

    result, metrics, confusion, calibrated = _bench(_outputs(tmp_path), tiny_artifact, clinc_slice, {})

    record = json.loads((tmp_path / "result.json").read_text())
    assert record["schema"] == "shrink.benchmark/v1" and record["candidate"] == "student"
    # What is measured is the calibrated copy promote takes: the model's bytes, with its fitted oos rule.
    assert record["artifact"]["uri"] == calibrated.uri and record["artifact"]["technique"] == "distill"
    meta = read_meta(calibrated.path)
    assert meta.content_hash() == record["artifact"]["content_hash"]
    assert meta.files == read_meta(tiny_artifact).files  # the same bytes; the rule makes it a new identity
    assert meta.content_hash() != read_meta(tiny_artifact).content_hash()
    assert record["oos"] == meta.extra["oos"] and record["oos"]["label"] == "oos"
    assert calibrated.metadata["content_hash"] == meta.content_hash()
    assert set(record["accuracy"]["raw"]) >= {"accuracy", "in_scope_accuracy", "oos_recall"}
    assert record["latency_ms"]["samples"] == 50 and record["latency_ms"]["warmup"] == 5
    assert record["threads"]["intra_op"] == 1 and record["threads"]["inter_op"] == 1
    assert record["latency_ms"]["rounds"] == 3 and len(record["latency_ms"]["round_p50"]) == 3
    # The cost follows from the measured capacity and the configured price.
    cost = record["cost"]
    cores = record["hardware"]["logical_cpus"]
    assert cost["usd_per_million"] == pytest.approx(0.36 / 3600 / (cost["qps_per_core"] * cores) * 1e6)

    m = metrics.metadata
    for key in (
        "accuracy",
        "in_scope_accuracy",
        "oos_recall",
        "macro_f1",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "size_mb",
        "qps_b8",
        "peak_rss_mb",
        "parameters",
        "nonzero_parameters",
        "usd_per_million",
        "raw_accuracy",
        "raw_in_scope_accuracy",
        "raw_oos_recall",
    ):
        assert isinstance(m[key], float), key
    assert m["p50_ms"] == record["latency_ms"]["p50"] and m["size_mb"] == record["size"]["model_mb"]
    assert result.metadata["candidate"] == "student"
    assert result.metadata["hardware_fingerprint"] == record["hardware"]["fingerprint"]

    # The confusion matrix is the one behind the accuracy figures.
    cm = confusion.metadata["confusionMatrix"]
    names = [c["displayName"] for c in cm["annotationSpecs"]]
    rows = [r["row"] for r in cm["rows"]]
    assert names == record["label_names"]
    total = sum(map(sum, rows))
    assert total == record["dataset"]["examples"]
    assert sum(rows[i][i] for i in range(len(rows))) / total == pytest.approx(record["accuracy"]["accuracy"])
    oos = names.index("oos")
    assert rows[oos][oos] / sum(rows[oos]) == pytest.approx(record["accuracy"]["oos_recall"])


def test_benchmark_component_refuses_mismatched_labels_and_publishes_nothing(
    tmp_path, tiny_artifact, clinc_slice, capsys
):
    import shutil

    from shrink.artifact import read_meta, write_artifact

    bad = tmp_path / "bad"
    shutil.copytree(tiny_artifact, bad)
    meta = read_meta(bad)
    write_artifact(
        bad, format="pytorch", precision="fp32", label_names=list(reversed(meta.label_names)), technique="distill"
    )
    result, metrics, confusion, calibrated = _outputs(tmp_path)
    with pytest.raises(SystemExit) as exc:
        _bench((result, metrics, confusion, calibrated), bad, clinc_slice, {})
    assert exc.value.code == 3  # shrink.kfp_io.EXIT_EXPECTED: a ShrinkError
    err = capsys.readouterr().err
    assert "error: " in err and "label names disagree" in err and "the same names in a different order" in err
    assert not (tmp_path / "result.json").exists() and not (tmp_path / "calibrated").exists()
    assert metrics.metadata == {} and confusion.metadata == {} and result.metadata == {}


def test_benchmark_component_without_an_oos_rule_measures_and_passes_on_a_plain_copy(
    tmp_path, tiny_artifact, clinc_slice
):
    from shrink.artifact import read_meta

    outputs = _bench(_outputs(tmp_path), tiny_artifact, clinc_slice, {"enabled": False})
    result, metrics, confusion, calibrated = outputs
    record = json.loads((tmp_path / "result.json").read_text())
    meta = read_meta(calibrated.path)
    assert record["oos"] is None and "oos" not in meta.extra and calibrated.metadata["oos_rule"] == "off"
    assert meta.content_hash() == read_meta(tiny_artifact).content_hash()
    raw, acc = record["accuracy"]["raw"], record["accuracy"]
    assert all(raw[k] == acc[k] for k in ("accuracy", "in_scope_accuracy", "oos_recall")), "no rule: raw is served"
    assert "oos_threshold" not in metrics.metadata


def test_benchmark_component_refuses_a_bad_oos_section_with_one_line(tmp_path, tiny_artifact, clinc_slice, capsys):
    with pytest.raises(SystemExit) as exc:
        _bench(_outputs(tmp_path), tiny_artifact, clinc_slice, {"label": "out_of_scope", "enabled": True})
    assert exc.value.code == 3
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(err) == 1 and "oos.label: 'out_of_scope' is not a label of the data" in err[0]
    assert not (tmp_path / "result.json").exists() and not (tmp_path / "calibrated").exists()
