import json
import os
import threading
import time

import pytest
import yaml
from kfp.dsl import HTML, Artifact, Metrics, Model

from shrink import storage
from shrink.artifact import read_meta
from shrink.errors import ShrinkError
from shrink.promote import alias_uri, current_production, list_versions, promote, rollback
from tests.factories import REGISTRY, decision_for, fresh_name, make_artifact, record


def fragile_client():
    """A real client without retries, so a dead store fails the call at once."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=os.environ["AWS_ENDPOINT_URL_S3"],
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10, s3={"addressing_style": "path"}),
    )


def wait_for_io(uri, timeout=90.0):
    """After a restart S3 answers before the volume server has re-registered: wait for real I/O."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            storage.get_json(uri)
            storage.put_json("s3://shrink-models/ready-probe.json", {"ok": True})
            return
        except ShrinkError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_promote_publishes_verified_version_card_and_manifest(seaweed, tmp_path):
    name = fresh_name()
    art, meta = make_artifact(tmp_path / "a", seed=1)
    d, cfg = decision_for(name, meta, name)
    pointer = promote(art, d, cfg, name, REGISTRY)

    assert pointer["version"].endswith("-" + meta.content_hash()[:8])
    assert pointer["uri"] == f"{REGISTRY}/{name}/{pointer['version']}/" and pointer["previous"] is None
    assert storage.get_json(alias_uri(name, REGISTRY)) == pointer
    # The version downloads and verifies as the same sealed artifact.
    local = storage.download_dir(pointer["uri"], tmp_path / "down")
    assert read_meta(local).content_hash() == meta.content_hash()
    card = json.loads((local / "model-card.json").read_text())
    assert card["candidate"] == "ort_int8_dynamic" and card["content_hash"] == meta.content_hash()
    assert card["metrics"]["latency_ms"]["p95"] == 6.0 and card["hardware"]["fingerprint"] == "hw-a"
    assert card["data"]["fingerprint"] == "data-1" and card["lineage"][-1]["technique"] == "ort-quantize-dynamic"
    assert {c["slo"] for c in card["slos"]} >= {"collapse", "no_accuracy_loss_vs_production"}
    assert "## SLOs" in (local / "MODEL_CARD.md").read_text()
    assert json.loads((local / "benchmark.json").read_text())["candidate"] == "ort_int8_dynamic"
    isvc = yaml.safe_load((local / "inferenceservice.yaml").read_text())
    predictor = isvc["spec"]["predictor"]
    assert isvc["kind"] == "InferenceService" and predictor["serviceAccountName"] == "shrink-serving"
    assert predictor["model"]["storageUri"] == pointer["uri"]
    assert predictor["model"]["runtime"] == "shrink-serve"
    assert predictor["model"]["modelFormat"] == {"name": "shrink-onnx", "version": "1"}
    # Champion/challenger reads the record back from the registry.
    prod = current_production(name, REGISTRY)
    assert prod["version"] == pointer["version"] and prod["benchmark"]["candidate"] == "ort_int8_dynamic"


def test_second_promotion_keeps_history_and_rollback_restores(seaweed, tmp_path):
    name = fresh_name()
    art1, meta1 = make_artifact(tmp_path / "a1", seed=1)
    d1, cfg = decision_for(name, meta1, name)
    v1 = promote(art1, d1, cfg, name, REGISTRY)
    art2, meta2 = make_artifact(tmp_path / "a2", seed=2, fmt="pytorch")
    d2, cfg = decision_for(name, meta2, name, candidate="student", p95=5.0)
    assert d2["production"]["version"] == v1["version"]
    v2 = promote(art2, d2, cfg, name, REGISTRY)
    assert v2["previous"]["version"] == v1["version"]
    assert list_versions(name, REGISTRY) == sorted([v1["version"], v2["version"]])
    isvc = yaml.safe_load(
        storage.client()
        .get_object(Bucket="shrink-models", Key=f"{name}/{v2['version']}/inferenceservice.yaml")["Body"]
        .read()
    )
    assert isvc["spec"]["predictor"]["model"]["runtime"] == "shrink-serve"
    assert isvc["spec"]["predictor"]["model"]["modelFormat"]["name"] == "shrink-pytorch"

    back = rollback(name, REGISTRY)
    assert back["version"] == v1["version"] and back["rolled_back_from"] == v2["version"]
    assert current_production(name, REGISTRY)["version"] == v1["version"]
    assert list_versions(name, REGISTRY) == sorted([v1["version"], v2["version"]])  # nothing deleted
    with pytest.raises(ShrinkError, match="has no previous version to roll back to"):
        rollback(name, REGISTRY)
    with pytest.raises(ShrinkError, match="nothing in production"):
        rollback(fresh_name(), REGISTRY)


def test_promote_refuses_unmeasured_model_and_stale_decision(seaweed, tmp_path):
    name = fresh_name()
    art1, meta1 = make_artifact(tmp_path / "a1", seed=1)
    art2, meta2 = make_artifact(tmp_path / "a2", seed=2)
    d1, cfg = decision_for(name, meta1, name)
    with pytest.raises(ShrinkError, match="is not the benchmarked ort_int8_dynamic"):
        promote(art2, d1, cfg, name, REGISTRY)
    with pytest.raises(ShrinkError, match="no benchmark record with a content hash"):
        promote(art1, {**d1, "records": {}}, cfg, name, REGISTRY)
    d2, _ = decision_for(name, meta2, name)  # decided while nothing was in production
    promote(art1, d1, cfg, name, REGISTRY)
    with pytest.raises(ShrinkError, match="but the gate compared against None; rerun the gate"):
        promote(art2, d2, cfg, name, REGISTRY)
    # The same model again: no new version, alias unchanged.
    d1b, _ = decision_for(name, meta1, name)
    again = promote(art1, d1b, cfg, name, REGISTRY)
    assert again["unchanged"] and len(list_versions(name, REGISTRY)) == 1
    with pytest.raises(ShrinkError, match="model name 'bad/name'"):
        promote(art1, d1, cfg, "bad/name", REGISTRY)


def test_concurrent_promotions_one_wins_cleanly(seaweed, tmp_path):
    name = fresh_name()
    art0, meta0 = make_artifact(tmp_path / "a0", seed=10)
    d0, cfg = decision_for(name, meta0, name)
    v0 = promote(art0, d0, cfg, name, REGISTRY)
    barrier = threading.Barrier(2, timeout=60)

    def hold_at_alias(params, **_):
        # Both promotions have read the old alias and uploaded; now they switch it at the same moment.
        if params.get("Key", "").endswith("production.json"):
            barrier.wait()

    results = {}

    def run(i):
        art, meta = make_artifact(tmp_path / f"c{i}", seed=20 + i)
        s3 = storage.client()
        d, cfg = decision_for(name, meta, name, s3=s3)
        s3.meta.events.register("provide-client-params.s3.PutObject", hold_at_alias)
        try:
            results[i] = promote(art, d, cfg, name, REGISTRY, s3=s3)
        except ShrinkError as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    winners = [r for r in results.values() if isinstance(r, dict)]
    losers = [r for r in results.values() if isinstance(r, ShrinkError)]
    assert len(winners) == 1 and len(losers) == 1, results
    assert "another promotion won" in str(losers[0])
    alias = current_production(name, REGISTRY)
    assert alias["version"] == winners[0]["version"] and alias["previous"]["version"] == v0["version"]
    # Both uploads are complete, immutable versions; only the alias was contended.
    versions = list_versions(name, REGISTRY)
    assert len(versions) == 3
    for v in versions:
        read_meta(storage.download_dir(f"{REGISTRY}/{name}/{v}/", tmp_path / "check" / v))


def test_store_killed_mid_upload_keeps_previous_alias(tmp_path, monkeypatch):
    server = storage.SeaweedServer.on_free_ports(tmp_path / "weed")
    server.start()
    restarted = None
    try:
        server.wait_ready(timeout=90)
        server.create_buckets(["shrink-models"])
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        name = fresh_name()
        small, small_meta = make_artifact(tmp_path / "small", seed=1)
        d1, cfg = decision_for(name, small_meta, name)
        v1 = promote(small, d1, cfg, name, REGISTRY)

        big, big_meta = make_artifact(tmp_path / "big", seed=2, files=8, size=300_000)
        d2, cfg = decision_for(name, big_meta, name)
        puts = []

        def kill_during_upload(**_):
            puts.append(1)
            if len(puts) == 3:  # a few model files are up, the rest and the manifest are not
                server.kill()

        s3 = fragile_client()
        s3.meta.events.register("before-send.s3.PutObject", kill_during_upload)
        with pytest.raises(ShrinkError):
            promote(big, d2, cfg, name, REGISTRY, s3=s3)
        assert len(puts) >= 3

        restarted = storage.SeaweedServer(**{**server.to_state(), "pid": None})
        restarted.start()
        restarted.wait_ready(timeout=90)
        wait_for_io(alias_uri(name, REGISTRY))
        # The alias still names the previous good version; the half upload is not a version.
        assert current_production(name, REGISTRY)["version"] == v1["version"]
        assert list_versions(name, REGISTRY) == [v1["version"]]
        assert storage.download_dir(v1["uri"], tmp_path / "v1")
        # Rerun: the promotion completes and chains to the previous version.
        v2 = promote(big, d2, cfg, name, REGISTRY)
        assert current_production(name, REGISTRY)["version"] == v2["version"]
        assert v2["previous"]["version"] == v1["version"]
        read_meta(storage.download_dir(v2["uri"], tmp_path / "v2"))
    finally:
        (restarted or server).stop()


# --------------------------------------------------------------------------- components


def test_gate_and_promote_components_end_to_end(seaweed, tmp_path, tiny_artifact):
    from components.gate.component import gate
    from components.promote.component import promote as promote_op

    name = fresh_name()
    art, meta = tiny_artifact, read_meta(tiny_artifact)  # a real model: promote checks that it can be served
    teacher_art, _ = make_artifact(tmp_path / "teacher", seed=4, fmt="pytorch")
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "teacher.json").write_text(json.dumps(record("teacher", p95=10.0)))
    (bench / "student.json").write_text(json.dumps(record("student", p95=4.0, content_hash=meta.content_hash())))
    gate_cfg = {
        "slos": [{"metric": "p95_latency_ms", "direction": "lower_is_better", "kind": "threshold", "value": 5.0}]
    }
    decision = Artifact(uri=str(tmp_path / "decision.json"))
    chosen = gate.python_func(
        teacher=Artifact(uri=str(bench / "teacher.json")),
        student=Artifact(uri=str(bench / "student.json")),
        gate=gate_cfg,
        model_name=name,
        decision=decision,
        report=HTML(uri=str(tmp_path / "report.html")),
        metrics=Metrics(uri=str(tmp_path / "metrics")),
    )
    assert chosen == "student"
    promoted = Artifact(uri=str(tmp_path / "promoted.json"))
    uri = promote_op.python_func(
        decision=decision,
        gate=gate_cfg,
        model_name=name,
        promoted=promoted,
        teacher=Model(uri=str(teacher_art)),
        student=Model(uri=str(art)),
    )
    assert uri == current_production(name, REGISTRY)["uri"]
    assert promoted.metadata["candidate"] == "student"
    assert json.loads((tmp_path / "promoted.json").read_text())["promoted"] is True

    # A run where nothing passes: promote is a no-op and production stays.
    (bench / "student.json").write_text(json.dumps(record("student", p95=9.0, content_hash="other")))
    decision2 = Artifact(uri=str(tmp_path / "decision2.json"))
    assert (
        gate.python_func(
            teacher=Artifact(uri=str(bench / "teacher.json")),
            student=Artifact(uri=str(bench / "student.json")),
            gate=gate_cfg,
            model_name=name,
            decision=decision2,
            report=HTML(uri=str(tmp_path / "r2.html")),
            metrics=Metrics(uri=str(tmp_path / "m2")),
        )
        == ""
    )
    out = promote_op.python_func(
        decision=decision2,
        gate=gate_cfg,
        model_name=name,
        promoted=Artifact(uri=str(tmp_path / "p2.json")),
        student=Model(uri=str(art)),
    )
    assert out == "" and json.loads((tmp_path / "p2.json").read_text())["promoted"] is False
    assert current_production(name, REGISTRY)["uri"] == uri


def test_a_chosen_model_the_server_cannot_load_is_passed_over_for_the_next_passing_one(
    seaweed, tmp_path, tiny_artifact
):
    """The gate ranks on records; promote loads each in rank order through the serving path and skips the broken."""
    from shrink.gate import decide
    from shrink.promote import promote_chosen
    from shrink.slo import gate_config

    name = fresh_name()
    broken, broken_meta = make_artifact(tmp_path / "broken", seed=5)  # random bytes named model.onnx
    real = read_meta(tiny_artifact)
    cfg = gate_config({"slos": [], "model_name": name, "compare_to_production": False, "policy": "lowest_p95"})
    records = [
        record("teacher", p95=10.0, labels=real.label_names),
        record("ort_int8_dynamic", p95=1.0, content_hash=broken_meta.content_hash(), labels=real.label_names),
        record("student", p95=2.0, content_hash=real.content_hash(), labels=real.label_names),
    ]
    decision = decide(records, cfg)
    assert decision["chosen"] == "ort_int8_dynamic" and decision["ranking"][:2] == ["ort_int8_dynamic", "student"]
    path = tmp_path / "decision.json"
    path.write_text(json.dumps(decision))
    result = promote_chosen(path, {"ort_int8_dynamic": broken, "student": tiny_artifact}, cfg, name, tmp_path / "p")
    assert result.chosen == "student"
    assert current_production(name, REGISTRY)["content_hash"] == real.content_hash()
    doc = json.loads((tmp_path / "p").read_text())
    assert doc["candidate"] == "student" and "not servable" in doc["not_servable"]["ort_int8_dynamic"]

    # Nothing servable: nothing promoted, production unchanged, and the document says why.
    result = promote_chosen(path, {"ort_int8_dynamic": broken}, cfg, name, tmp_path / "p2")
    doc = json.loads((tmp_path / "p2").read_text())
    assert result.uri == "" and doc["promoted"] is False and "no passing candidate is servable" in doc["reason"]
    assert current_production(name, REGISTRY)["content_hash"] == real.content_hash()
