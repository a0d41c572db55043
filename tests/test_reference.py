"""The reference row: BERT-base's shape built offline, timed by the benchmark's workers, used by the gate and report."""

import json

import pytest
from kfp.dsl import Artifact, Dataset, Metrics, Model

from components.benchmark_reference.component import benchmark_reference
from shrink.config import BenchmarkConfig
from shrink.errors import ShrinkError
from shrink.gate import decide
from shrink.reference import SCHEMA, build_reference, measure_reference, ratios, reference_problems
from shrink.report import format_table, render_html
from shrink.slo import gate_config
from tests.factories import record

FAST = {
    "warmup": 0,
    "latency_samples": 40,
    "latency_rounds": 1,
    "reference_samples": 3,
    "batch_sizes": [8],
    "throughput_queries": 16,
    "bootstrap_resamples": 100,
}


def _reference_record(p50=50.0, p95=60.0, size=418.0, hw="hw-a"):
    return {
        "schema": SCHEMA,
        "candidate": "reference",
        "architecture": "bert-base",
        "display": "BERT-base",
        "weights": "random (seed 0): timing and size only",
        "latency_ms": {"p50": p50, "p95": p95, "p99": p95 * 1.1, "mean": p50},
        "size": {"model_mb": size, "parameters": 109_000_000},
        "memory": {"peak_rss_mb": 900.0},
        "hardware": {"fingerprint": hw, "cpu_model": f"CPU {hw}", "cores_used": 1},
    }


@pytest.fixture
def small_architecture(monkeypatch):
    """A one-layer BERT under a test name: the same code paths as bert-base without writing 418 MB in CI."""
    from shrink import reference

    small = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    monkeypatch.setitem(reference.ARCHITECTURES, "test-small", small)
    return "test-small"


def test_bert_base_entry_is_bert_base_uncased_shape():
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from shrink.reference import ARCHITECTURES

    config = BertConfig(**ARCHITECTURES["bert-base"])
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (12, 768, 3072)
    with torch.device("meta"):  # shapes only, no memory
        encoder = BertForSequenceClassification(config).bert
    # bert-base-uncased: 109.48M parameters, 418 MiB in FP32.
    params = sum(p.numel() for p in encoder.parameters())
    assert params == 109_482_240
    assert round(params * 4 / 2**20) == 418


def test_reference_is_built_offline_and_timed_by_the_benchmark_worker(small_architecture, tiny_artifact, clinc_slice):
    rec = measure_reference(small_architecture, tiny_artifact, clinc_slice, BenchmarkConfig(**FAST))
    assert reference_problems(rec) == []
    assert rec["shape"]["num_hidden_layers"] == 1 and rec["shape"]["hidden_size"] == 32
    assert rec["latency_ms"]["rounds"] == 1 and rec["latency_ms"]["p50"] > 0
    assert rec["size"]["parameters"] > 0 and rec["size"]["model_mb"] > 0
    assert "accuracy" not in rec  # random weights: no accuracy is claimed
    assert rec["hardware"]["fingerprint"]


def test_the_reference_keeps_the_teachers_tokenizer_and_labels(small_architecture, tmp_path, tiny_artifact):
    from transformers import BertConfig

    out = tmp_path / "ref"
    meta = build_reference(small_architecture, tiny_artifact, out)
    assert BertConfig.from_pretrained(out).num_hidden_layers == 1 == meta.settings["shape"]["num_hidden_layers"]
    assert (out / "tokenizer.json").read_bytes() == (tiny_artifact / "tokenizer.json").read_bytes()
    labels = json.loads((tiny_artifact / "shrink.json").read_text())["label_names"]
    assert json.loads((out / "shrink.json").read_text())["label_names"] == labels


def test_unknown_architecture_is_one_line_naming_the_key(tmp_path, tiny_artifact):
    with pytest.raises(ShrinkError, match=r"benchmark.reference: 'gpt2' is not one of"):
        build_reference("gpt2", tiny_artifact, tmp_path / "ref")


def test_component_writes_an_absent_record_when_off(tmp_path, tiny_artifact, clinc_slice):
    result = Artifact(uri=str(tmp_path / "ref.json"))
    benchmark_reference.python_func(
        teacher=Model(uri=str(tiny_artifact)),
        dataset=Dataset(uri=str(clinc_slice)),
        benchmark={**FAST, "reference": None},
        result=result,
        metrics=Metrics(uri=str(tmp_path / "m")),
    )
    assert json.loads((tmp_path / "ref.json").read_text()) == {
        "candidate": "reference",
        "absent": "benchmark.reference is null",
    }


def test_ratios_are_reference_over_candidate():
    got = ratios(record("x", p50=0.5, p95=0.6, size=8.0), _reference_record(p50=50.0, p95=60.0, size=418.0))
    assert got == pytest.approx({"p50_speedup": 100.0, "p95_speedup": 100.0, "size_reduction": 52.25})
    assert ratios({}, _reference_record())["p50_speedup"] is None


def _gate(*slos):
    return gate_config({"slos": list(slos), "compare_to_production": False, "policy": "lowest_p95"})


HUNDREDFOLD = {
    "metric": "p50_latency_ms",
    "direction": "lower_is_better",
    "kind": "percent_min_improvement",
    "value": 99.0,
    "baseline": "reference",
}


def test_a_reference_goal_passes_only_the_hundredfold_faster_candidate():
    records = [record("teacher", p50=7.0), record("fast", p50=0.45), record("slow", p50=0.6)]
    d = decide(records, _gate(HUNDREDFOLD), reference=_reference_record(p50=50.0))
    status = {c["name"]: c["status"] for c in d["candidates"]}
    assert status["fast"] == "pass" and status["slow"] == "fail"
    assert d["chosen"] == "fast"
    assert d["reference"]["ratios"]["fast"]["p50_speedup"] == pytest.approx(50.0 / 0.45)


def test_a_reference_goal_fails_closed_without_a_usable_reference():
    records = [record("teacher", p50=7.0), record("fast", p50=0.45)]
    for reference, why in ((None, "none measured in this run"), ({"schema": "x"}, "not a shrink.reference/v1")):
        d = decide(records, _gate(HUNDREDFOLD), reference=reference)
        assert d["chosen"] is None
        fast = next(c for c in d["candidates"] if c["name"] == "fast")
        check = next(c for c in fast["checks"] if c["baseline"] == "reference")
        assert not check["passed"] and why in check["reason"]


def test_reference_on_other_hardware_is_not_compared():
    records = [record("teacher", p50=7.0), record("fast", p50=0.45)]
    d = decide(records, _gate(HUNDREDFOLD), reference=_reference_record(hw="hw-b"))
    assert d["chosen"] is None


def test_only_timing_and_size_goals_may_name_the_reference():
    goal = {**HUNDREDFOLD, "metric": "accuracy", "direction": "higher_is_better", "kind": "max_degradation"}
    goal["value"] = 0.01
    with pytest.raises(ShrinkError, match=r"gate.slos\[0\].baseline: the reference .* not accuracy"):
        _gate(goal)


def test_report_shows_the_reference_row_and_the_chosen_models_ratios():
    records = [record("teacher", p50=7.0, size=87.0), record("fast", p50=0.5, size=8.0)]
    d = decide(records, _gate(), reference=_reference_record(p50=50.0, size=418.0))
    table = format_table(d)
    row = next(line for line in table.splitlines() if line.startswith("BERT-base (reference)"))
    assert "reference" in row and "418" in row
    assert "fast is 100x faster (p50) and 52x smaller" in table
    assert "BERT-base (reference)" in render_html(d)
