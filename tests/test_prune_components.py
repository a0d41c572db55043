"""The prune and prune_structured KFP components, called with real kfp.dsl artifacts on the CLINC slice."""

from __future__ import annotations

import json
import os

import pytest
import torch
from kfp.dsl import Dataset, Metrics, Model

from shrink.config import PruneConfig, TrainConfig, to_dict


@pytest.fixture(scope="module", autouse=True)
def one_core():
    """One core: tiny models gain nothing from two, and a busy CI box loses a lot to oversubscription."""
    cpus, threads = os.sched_getaffinity(0), torch.get_num_threads()
    os.sched_setaffinity(0, {min(cpus)})
    yield
    os.sched_setaffinity(0, cpus)
    torch.set_num_threads(threads)


def prune_section(**kw) -> dict:
    train = TrainConfig(epochs=1, batch_size=16, max_length=32, learning_rate=1e-3, device="cpu")
    return to_dict(PruneConfig(enabled=True, target_sparsity=0.8, update_every=2, train=train, **kw))


@pytest.fixture(scope="module")
def student_artifact(tmp_path_factory, tiny_model_dir):
    from shrink.models import load_classifier, load_tokenizer, read_label_names, save_classifier

    out = tmp_path_factory.mktemp("student") / "student"
    save_classifier(
        load_classifier(tiny_model_dir),
        load_tokenizer(tiny_model_dir),
        out,
        label_names=read_label_names(tiny_model_dir),
        technique="distill",
        settings={"max_length": 32},
    )
    return out


def read_metrics(metrics: Metrics) -> dict:
    return dict(metrics.metadata)


def call_pruner(component, tmp_path, dataset, teacher, student, prune: dict, **extra) -> tuple[Model, Metrics]:
    """Run a pruning component's function on real kfp.dsl artifacts; returns its (pruned, metrics) outputs."""
    pruned, metrics = Model(uri=str(tmp_path / "pruned")), Metrics(uri=str(tmp_path / "metrics"))
    component.python_func(
        dataset=Dataset(uri=str(dataset)),
        teacher=Model(uri=str(teacher)),
        student=Model(uri=str(student)),
        prune=prune,
        pruned=pruned,
        metrics=metrics,
        **extra,
    )
    return pruned, metrics


def test_prune_component_writes_a_sparse_artifact(clinc_slice, student_artifact, tmp_path):
    from components.prune.component import prune
    from shrink.artifact import read_meta
    from shrink.runtime import open_classifier

    pruned, metrics = call_pruner(
        prune, tmp_path, clinc_slice, student_artifact, student_artifact, prune_section(), method="movement"
    )
    meta = read_meta(pruned.path)
    assert meta.technique == "prune-movement" and meta.format == "pytorch"
    assert meta.extra["loader"] == "shrink.sparse:load_pruned"
    assert meta.parent["content_hash"] == read_meta(student_artifact).content_hash()
    layers = meta.extra["sparsity"]["layers"]
    assert len(layers) == 4 * 6 and meta.metrics["sparsity"] == pytest.approx(0.8, abs=1e-5)
    assert pruned.metadata["technique"] == "prune-movement"
    assert pruned.metadata["content_hash"] == meta.content_hash()
    m = read_metrics(metrics)
    assert m["sparsity"] == meta.metrics["sparsity"] and m["weights_bytes"] < m["dense_weights_bytes"]
    assert (tmp_path / "pruned" / "prune.yaml").is_file()

    clf = open_classifier(pruned.path)
    encoder = [p for n, p in clf.module.named_parameters() if ".encoder." in n and n.endswith("weight") and p.ndim == 2]
    zeros = sum(int((p == 0).sum()) for p in encoder)
    assert zeros == round(0.8 * sum(p.numel() for p in encoder))
    assert len(clf.predict(["what is my balance"])) == 1


def test_prune_structured_component_writes_a_smaller_dense_artifact(clinc_slice, student_artifact, tmp_path):
    from components.prune_structured.component import prune_structured
    from shrink.artifact import read_meta
    from shrink.runtime import open_classifier

    pruned, metrics = call_pruner(
        prune_structured,
        tmp_path,
        clinc_slice,
        student_artifact,
        student_artifact,
        prune_section(head_fraction=0.5, ffn_fraction=0.75),
    )
    meta = read_meta(pruned.path)
    assert meta.technique == "prune-structured"
    assert meta.metrics["heads_per_layer"] == [2] * 4 and meta.metrics["intermediate_sizes"] == [32] * 4
    config = json.loads((tmp_path / "pruned" / "config.json").read_text())
    assert config["shrink_structure"]["heads"] == [2] * 4
    assert pruned.metadata["parameters"] < read_metrics(metrics)["dense_parameters"]
    clf = open_classifier(pruned.path)
    layer = clf.module.bert.encoder.layer[0]
    assert tuple(layer.attention.self.query.weight.shape) == (32, 64)
    assert tuple(layer.intermediate.dense.weight.shape) == (32, 64)
    assert len(clf.predict(["play a song", "how many calories in an apple"])) == 2


def test_prune_component_bad_input_is_one_line_and_exit_1(clinc_slice, student_artifact, tmp_path, capsys):
    from components.prune.component import prune

    args = dict(
        dataset=Dataset(uri=str(clinc_slice)),
        teacher=Model(uri=str(student_artifact)),
        student=Model(uri=str(student_artifact)),
        pruned=Model(uri=str(tmp_path / "p")),
        metrics=Metrics(uri=str(tmp_path / "m")),
    )
    with pytest.raises(SystemExit) as exc:
        prune.python_func(prune=prune_section(), method="random", **args)
    assert exc.value.code == 3  # shrink.kfp_io.EXIT_EXPECTED: a ShrinkError
    assert "method: 'random' is not one of 'magnitude', 'movement'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        prune.python_func(prune={**prune_section(), "target_sparsity": 1.0}, method="magnitude", **args)
    assert "prune.target_sparsity: must be in [0, 1)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        prune.python_func(prune=prune_section(schedule_start=20, schedule_steps=20), method="magnitude", **args)
    assert "longer than the 28 training steps" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_structured_pruning_keeps_a_small_vocabulary_and_its_tokenizer(clinc_slice, trained, tmp_path):
    """The pipeline prunes the small-vocabulary student: the cut rows stay cut and texts tokenize as before."""
    from components.prune_structured.component import prune_structured
    from shrink.config import VocabularyConfig
    from shrink.runtime import open_classifier
    from shrink.vocab import prune_vocabulary

    small = tmp_path / "small"
    prune_vocabulary(trained, clinc_slice, small, VocabularyConfig(keep_fraction=None))
    pruned, _ = call_pruner(prune_structured, tmp_path, clinc_slice, trained, small, prune_section())
    full, before, after = (open_classifier(p) for p in (trained, small, pruned.path))
    rows = [c.module.bert.embeddings.word_embeddings.weight.shape[0] for c in (full, before, after)]
    assert rows[2] == rows[1] < rows[0]
    assert json.loads((tmp_path / "pruned" / "config.json").read_text())["vocab_size"] == rows[1]
    texts = ["what is my balance", "xylophone quizzically", "play some jazz music"]
    assert (after.encode(texts)["input_ids"] == before.encode(texts)["input_ids"]).all()
    sizes = [sum(p.numel() for p in c.module.parameters()) for c in (full, before, after)]
    assert sizes[2] < sizes[1] < sizes[0]
    assert len(after.predict(texts)) == 3
