"""The whole DAG through kfp.local on a tiny BERT and a CLINC150 slice, ending in a promotion and a report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shrink import storage
from shrink.config import PipelineConfig, from_dict
from tests.factories import SLICE_LABELS

TRAIN = {"epochs": 6, "learning_rate": 3e-3, "batch_size": 16, "max_length": 32, "early_stopping_patience": 0}


def config(clinc_dir, tiny_model_dir) -> PipelineConfig:
    """The tiny DAG's config (also run in containers by tests/test_images.py)."""
    return from_dict(
        PipelineConfig,
        {
            "name": "shrink-test",
            "model_name": "tiny-intent",
            "data": {"source": str(clinc_dir), "labels": SLICE_LABELS, "max_per_class": 30, "seed": 0},
            "teacher": {"base_model": str(tiny_model_dir), "train": TRAIN},
            "distill": {
                "student_layers": [0, 2],
                "train": {**TRAIN, "epochs": 4},
                "search": {"alpha": [0.5, 1.0], "temperature": [2.0], "learning_rate": [3e-3], "parallelism": 1},
            },
            "quantize": {"calibration_samples": 32},
            "benchmark": {"warmup": 5, "latency_samples": 50, "batch_sizes": [8], "bootstrap_resamples": 100},
            "gate": {
                "slos": [
                    {
                        "metric": "accuracy",
                        "direction": "higher_is_better",
                        "kind": "max_degradation",
                        "value": 0.15,
                        "baseline": "teacher",
                    },
                    {"metric": "p95_latency_ms", "direction": "lower_is_better", "kind": "threshold", "value": 5000.0},
                ],
                "max_majority_fraction": 0.6,
            },
        },
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory, seaweed, tiny_model_dir, clinc_dir):
    from pipelines.local import run_local

    cfg = config(clinc_dir, tiny_model_dir)
    tmp = tmp_path_factory.mktemp("run")
    summary = run_local(cfg, run_id="test-run", results_dir=tmp / "results", state_dir=tmp / "state")
    return summary, tmp, cfg


def test_dag_ends_in_a_decision_and_report(run):
    summary, tmp, _ = run
    latest = tmp / "results" / "latest"
    assert (latest / "report.html").read_text().count("<img") >= 1
    decision = json.loads((latest / "decision.json").read_text())
    names = {c["name"] for c in decision["candidates"]}
    assert {
        "teacher",
        "student",
        "torch_int8",
        "onnx_fp32",
        "onnx_optimized",
        "ort_int8_dynamic",
        "ort_int8_static",
    } <= names
    assert summary["chosen"], f"nothing promoted: {decision.get('reason')}"
    assert decision["chosen"] == summary["chosen"]


def test_promoted_version_is_complete_behind_the_alias(run):
    summary, tmp, _ = run
    pointer = storage.get_json("s3://shrink-models/tiny-intent/production.json")
    files = storage.read_manifest(pointer["uri"])
    assert "shrink.json" in files
    local = storage.download_dir(pointer["uri"], tmp / "promoted")
    from shrink.runtime import open_classifier

    clf = open_classifier(local)
    assert clf.label_names == sorted(SLICE_LABELS)
    assert len(clf.predict(["what's the weather like", "book me a flight to paris"])) == 2


def test_rerun_re_measures_the_champion_and_keeps_it(run):
    """A scheduled rerun: training comes from cache, the champion is benchmarked beside the challengers."""
    from pipelines.local import run_local

    first, tmp, cfg = run
    before = storage.get_json("s3://shrink-models/tiny-intent/production.json")
    # The first run found nothing in production to re-measure.
    assert json.loads((tmp / "results" / "test-run" / "decision.json").read_text())["production"] is None
    summary = run_local(cfg, run_id="test-rerun", results_dir=tmp / "results", state_dir=tmp / "state")
    decision = json.loads((tmp / "results" / "test-rerun" / "decision.json").read_text())
    assert decision["production"]["version"] == before["version"]
    # The unchanged artifact is among the candidates, so the gate judges it (and everyone) by that candidate's
    # own record rather than by a second timing of itself; the champion step measured it as well.
    assert decision["production"]["measured"].startswith("in this run, as candidate")
    assert decision["production"]["summary"]["p95_ms"] > 0
    champion = [json.loads(f.read_text()) for f in Path(summary["pipeline_root"]).glob("*/benchmark-production/result")]
    assert len(champion) == 1 and champion[0]["candidate"] == "production"
    assert champion[0]["artifact"]["content_hash"] == before["content_hash"]
    assert champion[0]["production"]["version"] == before["version"]
    # Cached models: if the same candidate wins, the alias is untouched; a p95 tie broken the other way
    # promotes the other variant of the same student, with the champion kept as its previous version.
    after = storage.get_json("s3://shrink-models/tiny-intent/production.json")
    if summary["chosen"] in (first["chosen"], ""):
        assert after["version"] == before["version"]
    else:
        assert after["previous"]["version"] == before["version"]
