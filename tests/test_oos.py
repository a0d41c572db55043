"""Out-of-scope calibration: the rule's choice on constructed logits, and the rule as part of the model.

The pure functions are checked where the right answer is known by construction (the
best threshold, the direction reweighting moves it, which score ``auto`` prefers);
then a tiny model trained on a real CLINC150 slice (oos included) is calibrated on its
validation split and the rule is seen to act where it must: ``Classifier.predict``,
the served answers and the benchmark record. A label set without ``oos`` (BANKING77)
gets no rule, and every bad setting is one line naming its key.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from shrink.artifact import read_meta
from shrink.config import OosConfig, from_dict, load_pipeline_config
from shrink.errors import ShrinkError
from shrink.oos import (
    OosRule,
    apply_rule,
    best_threshold,
    energy,
    figures,
    fit_rule,
    max_softmax,
    oos_weights,
    rule_of,
    write_rule,
)
from tests.factories import BANKING, DEMO_CONFIG

OOS = 2  # label ids below: 0 and 1 are intents, 2 is oos


def _probs(rows):
    """Logits whose softmax is exactly ``rows`` (log-probabilities)."""
    return np.log(np.asarray(rows, dtype=np.float64))


# --------------------------------------------------------------------------- scores and thresholds


def test_scores_are_the_top_probability_and_logsumexp():
    logits = np.array([[2.0, 0.0, 0.0], [10.0, 9.0, -3.0]])
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert max_softmax(logits) == pytest.approx(p.max(axis=1))
    assert energy(logits) == pytest.approx(np.log(np.exp(logits).sum(axis=1)))
    # Shifting every logit moves energy, not the softmax: the two scores see different things.
    assert max_softmax(logits + 5) == pytest.approx(max_softmax(logits))
    assert energy(logits + 5) == pytest.approx(energy(logits) + 5)


def test_best_threshold_is_the_cut_that_maximises_weighted_accuracy():
    # Scores sorted for reading; predictions are all intent 0 (right for in-scope, wrong for oos).
    scores = np.array([0.2, 0.3, 0.4, 0.6, 0.7, 0.9])
    labels = np.array([OOS, OOS, 0, OOS, 0, 0])
    preds = np.zeros(6, dtype=int)
    w = np.full(6, 1 / 6)
    # Reject below 0.35: both low oos right, nothing in scope lost -> 5/6 (rejecting up to 0.65 also gives 5/6:
    # one more oos caught, one intent lost; the lower cut wins the tie).
    threshold, acc = best_threshold(scores, preds, labels, OOS, w)
    assert threshold == pytest.approx(0.35) and acc == pytest.approx(5 / 6)
    ruled = np.where(scores < threshold, OOS, preds)
    assert figures(labels, ruled, OOS)["accuracy"] == pytest.approx(5 / 6)
    # When every low score is in scope, rejecting only costs: no threshold.
    threshold, acc = best_threshold(scores, preds, np.array([0, 0, 0, 0, 0, OOS]), OOS, w)
    assert threshold is None and acc == pytest.approx(5 / 6)


def test_tied_scores_are_never_split():
    scores = np.array([0.5, 0.5, 0.9])
    labels = np.array([OOS, 0, 0])
    threshold, _ = best_threshold(scores, np.zeros(3, dtype=int), labels, OOS, np.full(3, 1 / 3))
    assert threshold is None or threshold > 0.5 or threshold < 0.5  # a cut between two equal scores is no cut
    ruled = apply_rule(_probs([[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]]), _rule("max_softmax", threshold))
    assert ruled[0] == ruled[1]


def test_weights_give_the_oos_examples_the_declared_share():
    labels = np.array([0, 1, 0, 1, OOS])
    for share in (0.0, 0.2, 0.5, 0.9):
        w = oos_weights(labels, OOS, share)
        assert w.sum() == pytest.approx(1.0) and w[labels == OOS].sum() == pytest.approx(share)
    assert oos_weights(labels, OOS, 0.2) == pytest.approx(np.full(5, 0.2))  # its own share: plain accuracy


def test_a_larger_oos_share_raises_the_threshold():
    # In-scope answers (all right) spread evenly over confidences 0.34-0.99; oos ones (all wrong) crowd the
    # low end. The more the oos examples weigh, the more in-scope answers a higher threshold may give up.
    n_in, n_oos = 400, 40
    conf_in = 0.34 + 0.65 * (np.arange(n_in) + 0.5) / n_in
    conf_oos = 0.34 + 0.5 * ((np.arange(n_oos) + 0.5) / n_oos) ** 2
    conf = np.concatenate([conf_in, conf_oos])
    logits = _probs(np.stack([conf, (1 - conf) / 2, (1 - conf) / 2], axis=1))
    labels = np.array([0] * n_in + [OOS] * n_oos)
    rules = [fit_rule(logits, labels, OOS, OosConfig(expected_oos_share=share)) for share in (0.18, 0.3, 0.5)]
    thresholds = [r.threshold for r in rules]
    assert thresholds[0] < thresholds[1] < thresholds[2]
    recall = [r.validation["oos_recall"] for r in rules]
    in_scope = [r.validation["in_scope_accuracy"] for r in rules]
    assert recall == sorted(recall) and recall[0] < recall[2] and in_scope == sorted(in_scope, reverse=True)
    for r in rules:  # never worse than no rule on what it was tuned for
        assert r.validation["weighted_accuracy"] >= r.validation["raw"]["weighted_accuracy"]
    assert rules[0].share_from == "declared" and rules[0].expected_oos_share == 0.18
    own = fit_rule(logits, labels, OOS, OosConfig())
    assert own.share_from == "validation" and own.expected_oos_share == pytest.approx(40 / 440)
    assert own.threshold <= thresholds[0]


def test_auto_picks_the_score_that_separates_and_records_both():
    # In scope: two intents nearly tied but large logits (low top probability, high energy).
    # Out of scope: one clear winner of small logits (high top probability, low energy).
    in_scope = [[10.0, 9.9 - 0.1 * i, 0.0] for i in range(10)]
    oos = [[2.0 + 0.1 * i, 0.0, 0.0] for i in range(5)]
    logits = np.array(in_scope + oos)
    labels = np.array([0] * 10 + [OOS] * 5)
    rule = fit_rule(logits, labels, OOS, OosConfig(rule="auto"))
    assert rule.rule == "energy"
    candidates = rule.validation["candidates"]
    assert set(candidates) == {"max_softmax", "energy"}
    assert candidates["energy"]["weighted_accuracy"] == pytest.approx(1.0)
    assert candidates["max_softmax"]["weighted_accuracy"] < 1.0
    assert (apply_rule(logits, rule) == labels).all()
    assert fit_rule(logits, labels, OOS, OosConfig(rule="max_softmax")).rule == "max_softmax"


def test_a_fixed_threshold_is_used_as_given():
    logits = _probs([[0.9, 0.05, 0.05], [0.4, 0.3, 0.3], [0.6, 0.2, 0.2]])
    rule = fit_rule(logits, np.array([0, OOS, 0]), OOS, OosConfig(threshold=0.5))
    assert rule.fixed and rule.threshold == 0.5
    assert apply_rule(logits, rule).tolist() == [0, OOS, 0]


def _rule(name, threshold, label_id=OOS):
    return OosRule(rule=name, threshold=threshold, label="oos", label_id=label_id, expected_oos_share=0.1)


def test_apply_rule_rejects_below_the_threshold_only():
    logits = _probs([[0.9, 0.05, 0.05], [0.45, 0.3, 0.25], [0.1, 0.1, 0.8]])
    assert apply_rule(logits, None).tolist() == [0, 0, 2]
    assert apply_rule(logits, _rule("max_softmax", None)).tolist() == [0, 0, 2]
    assert apply_rule(logits, _rule("max_softmax", 0.5)).tolist() == [0, OOS, 2]
    assert apply_rule(logits, _rule("max_softmax", 0.95)).tolist() == [OOS, OOS, OOS]
    # Energy sees the logits' scale: a small-logit row is rejected even with a clear winner.
    scaled = np.array([[5.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 3.0], [1.0, 0.0, 0.0]]) * [[1], [1], [1], [4]]
    assert energy(scaled)[1] < 2.0 < min(energy(scaled)[[0, 2, 3]])
    assert apply_rule(scaled, _rule("energy", 2.0)).tolist() == [0, OOS, 2, 0]


def test_validation_without_oos_examples_cannot_tune():
    logits = _probs([[0.9, 0.05, 0.05], [0.4, 0.3, 0.3]])
    with pytest.raises(ShrinkError, match=r"^oos.label: the validation split has no 'oos' example"):
        fit_rule(logits, np.array([0, 1]), OOS, OosConfig())


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("section", "key", "message"),
    [
        ({"threshold": 1.5}, "oos.threshold", "1.5 must be in (0, 1)"),
        ({"threshold": 0}, "oos.threshold", "0.0 must be in (0, 1)"),
        ({"threshold": 1.0}, "oos.threshold", "1.0 must be in (0, 1)"),
        ({"threshold": 0.5, "rule": "energy"}, "oos.threshold", "needs rule: max_softmax"),
        ({"expected_oos_share": 1.0}, "oos.expected_oos_share", "1.0 must be in [0, 1)"),
        ({"expected_oos_share": -0.1}, "oos.expected_oos_share", "-0.1 must be in [0, 1)"),
        ({"rule": "mahalanobis"}, "oos.rule", "is not one of"),
        ({"label": " "}, "oos.label", "must not be empty"),
        ({"enabled": "yes"}, "oos.enabled", "matches none of"),
    ],
)
def test_bad_settings_are_one_line_naming_the_key(section, key, message):
    with pytest.raises(ShrinkError) as exc:
        from_dict(OosConfig, section, "oos")
    text = str(exc.value)
    assert "\n" not in text and text.startswith(f"{key}: ") and message in text


def test_a_label_absent_from_the_labels_fails_only_when_required():
    labels = ["balance", "transfer"]
    assert OosConfig().active(labels) is False  # auto: BANKING77-style labels get no rule
    assert OosConfig().active([*labels, "oos"]) is True
    assert OosConfig(enabled=False).active([*labels, "oos"]) is False
    with pytest.raises(
        ShrinkError, match=r"^oos.label: 'oos' is not a label of the data \(labels: balance, transfer\)$"
    ):
        OosConfig(enabled=True).active(labels)


def test_bad_oos_section_in_a_config_file_is_one_line_from_the_cli(tmp_path, capsys):
    import yaml

    from shrink.cli import main

    demo = yaml.safe_load(DEMO_CONFIG.read_text())
    (tmp_path / "slo.yaml").write_text((DEMO_CONFIG.parent / "slo.yaml").read_text())
    path = tmp_path / "c.yaml"

    def compile_with(oos: dict, **data) -> list[str]:
        path.write_text(yaml.safe_dump({**demo, "data": {**demo["data"], **data}, "oos": {**demo["oos"], **oos}}))
        assert main(["compile", "--config", str(path), "-o", str(tmp_path / "p.yaml")]) == 1
        assert not (tmp_path / "p.yaml").exists()
        return capsys.readouterr().err.strip().splitlines()

    err = compile_with({"threshold": 2.0})
    # The file, then the key: ``<config> (gate: <slo file>).oos.threshold: ...``.
    assert len(err) == 1 and err[0].startswith(f"error: {path}")
    assert err[0].endswith(".oos.threshold: 2.0 must be in (0, 1): a max-softmax probability")
    err = compile_with({"expected_oos_share": 1.0})
    assert len(err) == 1 and err[0].startswith(f"error: {path}")
    assert err[0].endswith(".oos.expected_oos_share: 1.0 must be in [0, 1)")
    # With the data's labels named in the config, a required label the data lacks fails before any step.
    err = compile_with({"enabled": True, "label": "out_of_scope"}, labels=["balance", "oos"])
    assert len(err) == 1 and err[0].startswith(f"error: {path}")
    assert ".oos.label: 'out_of_scope' is not a label of the data (labels: balance, oos)" in err[0]


def test_demo_configs_declare_the_share_and_banking_has_no_rule():
    root = DEMO_CONFIG.parent
    for name in ("clinc150.yaml", "clinc150-bench.yaml"):
        cfg = load_pipeline_config(root / name)
        assert cfg.oos.expected_oos_share == 0.18 and cfg.oos.enabled == "auto" and cfg.oos.label == "oos"
    banking = load_pipeline_config(root / "banking77.yaml")
    assert banking.oos == OosConfig()  # auto: off, there is no oos label


# --------------------------------------------------------------------------- the rule in an artifact


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, trained, clinc_slice):
    """The trained tiny model calibrated on the slice's validation split for a 30% oos share."""
    from shrink.calibration import calibrate

    out = tmp_path_factory.mktemp("oos") / "calibrated"
    rule = calibrate(trained, clinc_slice, out, OosConfig(expected_oos_share=0.3))
    return out, rule


def test_calibration_does_not_lower_weighted_validation_accuracy_and_keeps_the_model(calibrated, trained):
    out, rule = calibrated
    v = rule.validation
    assert rule.rule == "max_softmax" and rule.threshold is not None and 0 < rule.threshold < 1
    assert v["oos_examples"] > 0 and v["weighted_accuracy"] >= v["raw"]["weighted_accuracy"]
    assert v["oos_recall"] >= v["raw"]["oos_recall"]
    # The copy is the model itself with the rule added: same files, the producer's technique and lineage kept,
    # hashes still verified; a new content hash, since the rule changes what it answers (promote matches on it).
    meta, original = read_meta(out), read_meta(trained)
    assert meta.content_hash() != original.content_hash() and meta.files == original.files
    assert (meta.technique, meta.lineage, meta.parent) == (original.technique, original.lineage, original.parent)
    stored = rule_of(meta, "x")
    assert stored == rule and json.loads((out / "shrink.json").read_text())["extra"]["oos"] == rule.to_dict()
    assert rule_of(original, "x") is None


def test_predict_applies_the_rule_and_flips_low_confidence_answers_to_oos(calibrated, trained, test_texts):
    from shrink.runtime import open_classifier

    out, rule = calibrated
    plain, ruled = open_classifier(trained), open_classifier(out)
    raw_ids, raw_logits = plain.predict_all(test_texts)
    ids, logits = ruled.predict_all(test_texts)
    assert np.allclose(logits, raw_logits)  # predict_all's second value stays the raw logits
    oos_id = ruled.label_names.index("oos")
    low = max_softmax(logits) < rule.threshold
    flipped = low & (raw_ids != oos_id)
    assert flipped.any(), "the rule changes no answer on the slice's test split"
    assert (ids[low] == oos_id).all() and (ids[~low] == raw_ids[~low]).all()
    # One text at a time, as a request is served: the same decisions.
    for k in np.flatnonzero(flipped)[:3].tolist() + np.flatnonzero(~low)[:3].tolist():
        assert int(ruled.predict([test_texts[k]])[0]) == ids[k]


def test_serving_answers_with_the_rule(calibrated, test_texts):
    import importlib

    from shrink.serving.config import ServeConfig
    from shrink.serving.kserve_api import InferRequest
    from shrink.serving.predictor import ShrinkPredictor

    InferInput = importlib.import_module("kserve").InferInput  # after kserve_api, which hides sys.argv from it

    out, rule = calibrated
    predictor = ShrinkPredictor(ServeConfig(model=str(out), cache_size=0))
    predictor.begin()
    try:
        model = predictor.holder.current
        texts = test_texts[:80]
        expected = model.classifier.predict(texts)
        logits = model.classifier.logits(model.classifier.encode(texts))
        low = max_softmax(logits) < rule.threshold
        assert low.any() and (~low).any()
        body = asyncio.run(predictor.predict({"instances": texts}))
        labels = [p["label"] for p in body["predictions"]]
        assert labels == [model.labels[int(k)] for k in expected]
        assert all(p["out_of_scope"] == (p["label"] == "oos") for p in body["predictions"])
        assert all(body["predictions"][k]["label"] == "oos" for k in np.flatnonzero(low))
        v2 = InferRequest("model", [InferInput("text", [len(texts)], "BYTES", texts)])
        response = asyncio.run(predictor.predict(v2))
        outputs = {o.name: o for o in response.outputs}
        flags = list(outputs["out_of_scope"].data)
        assert flags == [label == "oos" for label in labels]
        meta = predictor.metadata()
        assert meta["oos_rule"]["threshold"] == rule.threshold and meta["oos_labels"] == ["oos"]
    finally:
        predictor.stop()


def test_a_stored_rule_that_names_the_wrong_label_is_one_line(tmp_path, calibrated):
    import shutil

    from shrink.runtime import open_classifier

    out, rule = calibrated
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    write_rule(bad, OosRule(**{**rule.to_dict(), "label_id": 0}))
    with pytest.raises(ShrinkError, match=r"shrink.json: extra.oos.label 'oos' is not label 0 of the model's labels$"):
        open_classifier(bad)
    raw = json.loads((bad / "shrink.json").read_text())
    raw["extra"]["oos"]["rule"] = "mahalanobis"
    (bad / "shrink.json").write_text(json.dumps(raw))
    with pytest.raises(ShrinkError, match=r"extra.oos.rule: 'mahalanobis' is not one of max_softmax, energy$"):
        open_classifier(bad)


def test_off_for_a_label_set_without_oos(tmp_path, minilm_dir):
    from shrink.calibration import calibrate
    from shrink.config import DataConfig
    from shrink.data import prepare
    from shrink.models import load_classifier, load_tokenizer, save_classifier, tiny_bert

    labels = ["card_arrival", "exchange_rate", "lost_or_stolen_card"]
    data = tmp_path / "banking"
    info = prepare(DataConfig(source=str(BANKING), labels=labels, max_per_class=8, seed=0), data)
    assert not info.has_oos
    model = tiny_bert(info.label_names, minilm_dir, tmp_path / "model")
    art = tmp_path / "art"
    save_classifier(load_classifier(model), load_tokenizer(model), art, label_names=info.label_names, technique="x")
    out = tmp_path / "out"
    assert calibrate(art, data, out, OosConfig()) is None
    meta = read_meta(out)
    assert "oos" not in meta.extra and meta.content_hash() == read_meta(art).content_hash()
    with pytest.raises(ShrinkError, match=r"^oos.label: 'oos' is not a label of the data"):
        calibrate(art, data, out, OosConfig(enabled=True))


def test_turned_off_a_rule_the_model_arrived_with_is_removed(tmp_path, calibrated, clinc_slice):
    from shrink.calibration import calibrate
    from shrink.runtime import open_classifier

    src, _ = calibrated  # say, an imported teacher that was once calibrated and promoted
    assert calibrate(src, clinc_slice, tmp_path / "off", OosConfig(enabled=False)) is None
    assert open_classifier(tmp_path / "off").oos_rule is None
    off, with_rule = read_meta(tmp_path / "off"), read_meta(src)
    assert off.files == with_rule.files and off.content_hash() != with_rule.content_hash()
