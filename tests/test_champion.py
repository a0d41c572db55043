"""The champion re-measured in the run: fetched from a real SeaweedFS registry, benchmarked, used by the gate."""

import json

import numpy as np
import pytest
from kfp.dsl import HTML, Artifact, Dataset, Metrics

from components.benchmark_production.component import benchmark_production
from components.gate.component import gate
from shrink import storage
from shrink.artifact import read_meta
from shrink.data import load_prepared
from shrink.promote import current_production, promote
from shrink.runtime import open_classifier
from tests.factories import REGISTRY, decision_for, fresh_name

SMALL = {
    "warmup": 5,
    "latency_samples": 40,
    "latency_rounds": 1,
    "batch_sizes": [8],
    "throughput_queries": 16,
    "bootstrap_resamples": 100,
}


def _bench_production(tmp_path, clinc_slice, name, tag):
    result = Artifact(uri=str(tmp_path / f"{tag}.json"))
    benchmark_production.python_func(
        dataset=Dataset(uri=str(clinc_slice)),
        benchmark=SMALL,
        gate={},
        model_name=name,
        result=result,
        metrics=Metrics(uri=str(tmp_path / tag)),
    )
    return json.loads((tmp_path / f"{tag}.json").read_text()), result


def test_champion_is_fetched_verified_and_measured_then_used_by_the_gate(seaweed, tmp_path, tiny_artifact, clinc_slice):
    name = fresh_name()
    first, result = _bench_production(tmp_path, clinc_slice, name, "first")
    assert first == {"candidate": "production", "absent": "nothing in production yet"}
    assert result.metadata["absent"] == "nothing in production yet"

    meta = read_meta(tiny_artifact)
    decision, cfg = decision_for(name, meta, name, candidate="student", p95=1e6)  # a stored record: absurdly slow
    pointer = promote(tiny_artifact, decision, cfg, name, REGISTRY)
    champion, result = _bench_production(tmp_path, clinc_slice, name, "champion")
    # The registry copy measured is the sealed artifact itself: its hash, its bytes (card files removed).
    assert champion["candidate"] == "production" and champion["schema"] == "shrink.benchmark/v1"
    assert champion["artifact"]["content_hash"] == pointer["content_hash"] == meta.content_hash()
    assert champion["artifact"]["uri"] == pointer["uri"]
    assert champion["production"]["version"] == pointer["version"] == result.metadata["version"]
    local_bytes = sum(p.stat().st_size for p in tiny_artifact.rglob("*") if p.is_file())
    assert champion["size"]["artifact_bytes"] == local_bytes
    assert champion["latency_ms"]["samples"] == 40
    # Same model, same test split: the same predictions as the local artifact, served the same way.
    test = load_prepared(clinc_slice)[0]["test"]
    pred, _ = open_classifier(tiny_artifact).predict_all(list(test["text"]))
    assert champion["accuracy"]["accuracy"] == float(np.mean(pred == np.asarray(test["label"])))

    # The gate compares a challenger with today's champion, not with the stored record.
    teacher = {**champion, "candidate": "teacher", "artifact": {**champion["artifact"], "content_hash": "t"}}
    challenger = {**champion, "candidate": "student", "artifact": {**champion["artifact"], "content_hash": "c"}}
    files = {}
    for key, rec in (("teacher", teacher), ("student", challenger), ("production", champion)):
        files[key] = tmp_path / f"in-{key}.json"
        files[key].write_text(json.dumps(rec))

    def run_gate() -> dict:
        """The gate component on these three records; its decision."""
        gate.python_func(
            teacher=Artifact(uri=str(files["teacher"])),
            student=Artifact(uri=str(files["student"])),
            production=Artifact(uri=str(files["production"])),
            gate={},
            model_name=name,
            decision=Artifact(uri=str(tmp_path / "decision.json")),
            report=HTML(uri=str(tmp_path / "report.html")),
            metrics=Metrics(uri=str(tmp_path / "m")),
        )
        return json.loads((tmp_path / "decision.json").read_text())

    d = run_gate()
    assert d["production"]["version"] == pointer["version"]
    assert d["production"]["measured"] == "in this run, by the benchmark_production step"
    lat = next(
        c
        for c in next(e for e in d["candidates"] if e["name"] == "student")["checks"]
        if c["slo"] == "p95_within_10pct_of_production"
    )
    assert lat["baseline_value"] == champion["latency_ms"]["p95"] != 1e6
    assert "measured in this run, by the benchmark_production step" in (tmp_path / "report.html").read_text()

    # An unreadable champion record is named in the decision, and the stored record is the baseline again.
    files["production"].write_text("{not json")
    d = run_gate()
    assert d["production"]["measured"].startswith("stored record")
    assert "benchmark result unreadable" in d["production"]["not_measured"]


def test_corrupt_champion_in_the_registry_fails_the_step_naming_the_file(
    seaweed, tmp_path, tiny_artifact, clinc_slice, capsys
):
    from shrink.champion import fetch_production
    from shrink.errors import ShrinkError

    name = fresh_name()
    decision, cfg = decision_for(name, read_meta(tiny_artifact), name, candidate="student")
    pointer = promote(tiny_artifact, decision, cfg, name, REGISTRY)
    bucket, prefix = storage.parse_uri(pointer["uri"])
    storage.client().put_object(Bucket=bucket, Key=prefix + "model.safetensors", Body=b"not the weights")
    with pytest.raises(SystemExit) as exc:
        _bench_production(tmp_path, clinc_slice, name, "corrupt")
    assert exc.value.code == 3  # shrink.kfp_io.EXIT_EXPECTED: a ShrinkError
    assert f"{pointer['uri']}model.safetensors: sha256 mismatch after download" in capsys.readouterr().err
    with pytest.raises(ShrinkError, match=r"model\.safetensors: sha256 mismatch after download"):
        fetch_production(name, REGISTRY, tmp_path / "champion")
    assert not (tmp_path / "champion").exists()  # nothing half-downloaded left behind
    assert current_production(name, REGISTRY)["version"] == pointer["version"]  # the registry untouched
