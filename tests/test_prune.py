"""Pruning: schedule, magnitude and movement masks, compact storage, structured slicing, bad inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from shrink.config import PruneConfig, TrainConfig, from_dict
from shrink.errors import ShrinkError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_core():
    """One core: tiny models gain nothing from two, and a busy CI box loses a lot to oversubscription."""
    cpus, threads = os.sched_getaffinity(0), torch.get_num_threads()
    os.sched_setaffinity(0, {min(cpus)})
    torch.set_num_threads(1)
    yield
    os.sched_setaffinity(0, cpus)
    torch.set_num_threads(threads)


def small_cfg(**kw) -> PruneConfig:
    train = TrainConfig(epochs=1, batch_size=16, max_length=32, learning_rate=1e-3, device="cpu")
    return replace(PruneConfig(target_sparsity=0.75, update_every=2, train=train), **kw)


@pytest.fixture(scope="module")
def student_artifact(tmp_path_factory, tiny_model_dir):
    """The tiny BERT sealed as a shrink artifact (stands in for both teacher and student)."""
    from shrink.models import load_classifier, load_tokenizer, read_label_names, save_classifier

    out = tmp_path_factory.mktemp("student") / "student"
    model = load_classifier(tiny_model_dir)
    save_classifier(
        model,
        load_tokenizer(tiny_model_dir),
        out,
        label_names=read_label_names(tiny_model_dir),
        technique="distill",
        settings={"max_length": 32},
    )
    return out


@pytest.fixture(scope="module")
def inputs(student_artifact, clinc_slice):
    from shrink.prune import load_inputs

    (model, tokenizer, meta), _, data = load_inputs(
        small_cfg(), clinc_slice, student_artifact, student_artifact, torch.device("cpu")
    )
    return model, tokenizer, meta, data


def fresh(inputs):
    from shrink.prune import copy_model

    return copy_model(inputs[0])


@pytest.fixture(scope="module")
def magnitude_run(inputs):
    """A global magnitude run: the zeros seen right after the schedule ends, and the final model."""
    from shrink.prune import effective_weight, make_schedule, prunable_weights, prune_model, total_steps

    model, data, cfg = fresh(inputs), inputs[3], small_cfg()
    end = make_schedule(cfg, total_steps(cfg, len(data.train))).end
    seen = {}

    def on_step(step, m):
        if step == end + 1:  # the first step after the final masks: the rest of training must keep them
            seen.update({n: (effective_weight(mod) == 0).clone() for n, mod in prunable_weights(m)})

    stats = prune_model(model, data, cfg, "magnitude", torch.device("cpu"), on_step=on_step)
    return model, stats, seen, end


# --------------------------------------------------------------------------- schedule


def test_cubic_schedule_ramps_from_initial_to_final():
    from shrink.prune import Schedule

    s = Schedule(initial=0.1, final=0.9, start=10, steps=100, every=10)
    assert s.sparsity(0) == s.sparsity(10) == pytest.approx(0.1)
    assert s.sparsity(110) == s.sparsity(500) == pytest.approx(0.9)
    assert s.sparsity(60) == pytest.approx(0.9 - 0.8 * 0.5**3)
    values = [s.sparsity(t) for t in range(0, 120)]
    assert all(a <= b for a, b in zip(values, values[1:], strict=False))
    # Cubic: most of the pruning happens early in the ramp.
    assert s.sparsity(35) - s.sparsity(10) > s.sparsity(110) - s.sparsity(85)
    assert [t for t in range(120) if s.updates_at(t)] == list(range(10, 111, 10))


def test_schedule_longer_than_training_is_refused():
    from shrink.prune import make_schedule

    with pytest.raises(ShrinkError, match="schedule_start .*longer than the 28 training steps"):
        make_schedule(small_cfg(schedule_start=10, schedule_steps=20), 28)
    assert make_schedule(small_cfg(schedule_start=8, schedule_steps=20), 28).end == 28


# --------------------------------------------------------------------------- magnitude


def test_magnitude_prunes_the_smallest_weights_globally(inputs):
    from shrink.prune import MagnitudePruner, effective_weight, prunable_weights

    model = fresh(inputs)
    targets = prunable_weights(model)
    before = torch.cat([m.weight.detach().abs().flatten() for _, m in targets])
    MagnitudePruner(targets, "global").update(0.5)
    after = torch.cat([effective_weight(m).detach().flatten() for _, m in targets])
    pruned = after == 0
    assert int(pruned.sum()) == round(0.5 * before.numel())
    assert before[pruned].max() <= before[~pruned].min()


def test_magnitude_reaches_target_and_pruned_weights_stay_zero(magnitude_run):
    from shrink.prune import prunable_weights

    model, stats, seen, end = magnitude_run
    report = stats["sparsity"]
    assert report["zero_weights"] == round(0.75 * report["pruned_weights"])
    assert stats["steps"] > end + 1, "the test needs training steps after the schedule ends"
    assert seen, "the callback never saw the end of the schedule"
    for name, module in prunable_weights(model):
        assert not hasattr(module, "weight_mask"), "masks must be baked in (prune.remove)"
        now_zero = module.weight == 0
        assert bool(now_zero[seen[name]].all()), f"{name}: a pruned weight came back after more training"
    # Global scope lets layers differ; the embeddings were not pruned.
    assert len({round(v, 3) for v in report["layers"].values()}) > 1
    assert float((model.bert.embeddings.word_embeddings.weight == 0).float().mean()) < 0.01


def test_per_layer_scope_prunes_every_matrix_to_the_target(inputs):
    from shrink.prune import prune_model

    cfg = small_cfg(scope="per_layer", target_sparsity=0.5, include_classifier=True)
    stats = prune_model(fresh(inputs), inputs[3], cfg, "magnitude", torch.device("cpu"))
    layers = stats["sparsity"]["layers"]
    assert "classifier" in layers and "bert.pooler.dense" in layers
    for name, value in layers.items():
        assert value == pytest.approx(0.5, abs=1e-3), name


# --------------------------------------------------------------------------- movement


def test_movement_scores_get_the_straight_through_gradient():
    from shrink.prune import MovementPruner

    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 4)
    pruner = MovementPruner([("lin", lin)], "per_layer")
    w = lin.parametrizations.weight.original.detach().clone()
    x = torch.randn(3, 6)
    lin(x).sum().backward()
    scores = pruner.masks[0].scores
    # dL/dW' = 1 x^T summed over the batch; dL/dS = dL/dW' * W (Sanh et al., eq. 4).
    expected = x.sum(0)[None, :].expand(4, 6) * w
    assert torch.allclose(scores.grad, expected, atol=1e-6)
    # Masks follow the scores, not the weights: keep the top half of the scores.
    with torch.no_grad():
        scores.copy_(torch.arange(24, dtype=torch.float32).view(4, 6))
    pruner.update(0.5)
    assert pruner.masks[0].mask.flatten().tolist() == [False] * 12 + [True] * 12
    pruner.finalize()
    assert torch.equal(lin.weight == 0, torch.arange(24).view(4, 6) < 12)
    assert not hasattr(lin, "parametrizations")


def test_movement_reaches_target_exactly_with_learned_masks(inputs):
    from shrink.prune import prune_model

    model = fresh(inputs)
    stats = prune_model(model, inputs[3], small_cfg(target_sparsity=0.6), "movement", torch.device("cpu"))
    report = stats["sparsity"]
    assert report["zero_weights"] == round(0.6 * report["pruned_weights"])
    assert not any("scores" in k or "parametrizations" in k for k in model.state_dict())
    assert set(model.state_dict()) == set(inputs[0].state_dict())


# --------------------------------------------------------------------------- storage


def test_pack_unpack_is_exact_and_picks_the_smaller_form():
    from shrink.sparse import pack, unpack

    torch.manual_seed(0)
    sparse = torch.randn(37, 29)
    sparse[torch.rand(37, 29) < 0.8] = 0
    state = {"sparse": sparse, "dense": torch.randn(8, 8), "ids": torch.arange(5), "zeros": torch.zeros(3, 5)}
    tensors, index = pack(state)
    assert set(index) == {"sparse", "zeros"}
    assert "dense" in tensors and "ids" in tensors
    back = unpack(tensors, index)
    for name, t in state.items():
        assert back[name].dtype == t.dtype and torch.equal(back[name], t), name


def test_sparse_artifact_is_smaller_and_loads_identical_in_a_fresh_process(magnitude_run, inputs, tmp_path):
    from safetensors.torch import load_file, save_file

    from shrink.artifact import model_files, read_meta
    from shrink.prune import save_pruned

    model, tokenizer, student_meta = magnitude_run[0], inputs[1], inputs[2]
    meta = save_pruned(
        model,
        tokenizer,
        tmp_path / "pruned",
        small_cfg(),
        label_names=inputs[3].label_names,
        technique="prune-magnitude",
        settings={"max_length": 32},
        parent=student_meta,
        metrics={},
    )
    dense = tmp_path / "dense.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(dense))
    stored = sum(model_files(tmp_path / "pruned", read_meta(tmp_path / "pruned")).values())
    assert stored == meta.metrics["weights_bytes"] < 0.95 * dense.stat().st_size
    assert not list((tmp_path / "pruned").glob("*.bin")) and not (tmp_path / "pruned" / "model.safetensors").exists()

    texts = ["what is my bank balance", "play some jazz", "how long do i boil an egg"]
    script = (
        "import sys, json, torch\n"
        "from safetensors.torch import save_file\n"
        "from shrink.runtime import open_classifier\n"
        "clf = open_classifier(sys.argv[1])\n"
        "save_file({k: v.contiguous() for k, v in clf.module.state_dict().items()}, sys.argv[2])\n"
        "print(json.dumps(clf.logits(clf.encode(json.loads(sys.argv[3]))).tolist()))\n"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(tmp_path / "pruned"),
            str(tmp_path / "loaded.safetensors"),
            json.dumps(texts),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    loaded, original = load_file(str(tmp_path / "loaded.safetensors")), model.state_dict()
    assert set(loaded) == set(original)
    for name, tensor in original.items():
        assert torch.equal(loaded[name], tensor.cpu()), name
    model.eval()
    enc = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.inference_mode():
        expected = model(**enc).logits
    assert torch.allclose(torch.tensor(json.loads(out.stdout.strip().splitlines()[-1])), expected, atol=1e-5)


def test_corrupt_sparse_file_is_a_clear_error(tmp_path):
    from shrink.sparse import load_weights

    bad = tmp_path / "model.sparse.safetensors.zst"
    bad.write_bytes(b"not zstd at all")
    with pytest.raises(ShrinkError, match="model.sparse.safetensors.zst: not a zstd stream"):
        load_weights(bad)
    with pytest.raises(ShrinkError, match="missing"):
        load_weights(tmp_path / "absent.zst")


# --------------------------------------------------------------------------- structured


def masked_logits(model, keep_heads, keep_neurons, enc):
    """The original model with removed heads/neurons silenced by zeroing their output columns."""
    from shrink.prune import copy_model

    masked = copy_model(model).eval()
    with torch.no_grad():
        for layer, heads, neurons in zip(masked.bert.encoder.layer, keep_heads, keep_neurons, strict=True):
            d = layer.attention.self.attention_head_size
            for h in range(layer.attention.self.query.out_features // d):
                if h not in heads:
                    layer.attention.output.dense.weight[:, h * d : (h + 1) * d] = 0
            drop = [n for n in range(layer.intermediate.dense.out_features) if n not in neurons]
            layer.output.dense.weight[:, drop] = 0
        return masked(**enc).logits


def test_structured_removal_shrinks_layers_and_matches_the_masked_original(inputs, tmp_path):
    from shrink.prune import remove_heads_and_neurons, save_pruned
    from shrink.runtime import open_classifier

    model, tokenizer = fresh(inputs).eval(), inputs[1]
    keep_heads = [[0, 2], [1], [0, 1, 3], [3]]  # uneven on purpose: the loader must rebuild any structure
    gen = torch.Generator().manual_seed(0)
    keep_neurons = [sorted(torch.randperm(128, generator=gen)[:k].tolist()) for k in (64, 32, 100, 16)]
    texts = ["what is my credit score", "translate hello into french", "book me a flight to paris"]
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    expected = masked_logits(model, keep_heads, keep_neurons, enc)

    structure = remove_heads_and_neurons(model, keep_heads, keep_neurons)
    assert structure["heads"] == [2, 1, 3, 1] and structure["intermediate"] == [64, 32, 100, 16]
    layer = model.bert.encoder.layer[1]
    assert tuple(layer.attention.self.query.weight.shape) == (16, 64)
    assert tuple(layer.attention.output.dense.weight.shape) == (64, 16)
    assert tuple(layer.intermediate.dense.weight.shape) == (32, 64)
    assert tuple(layer.output.dense.weight.shape) == (64, 32)
    with torch.no_grad():
        got = model(**enc).logits
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, inputs[0].eval()(**enc).logits, atol=1e-3), "removal changed nothing"

    save_pruned(
        model,
        tokenizer,
        tmp_path / "s",
        small_cfg(),
        label_names=inputs[3].label_names,
        technique="prune-structured",
        settings={"max_length": 32},
        parent=inputs[2],
        metrics={},
    )
    clf = open_classifier(tmp_path / "s")
    assert tuple(clf.module.bert.encoder.layer[1].attention.self.query.weight.shape) == (16, 64)
    assert torch.allclose(torch.from_numpy(clf.logits(clf.encode(texts))), got, atol=1e-5)


def test_importance_ranks_heads_and_choice_keeps_the_top(inputs):
    from shrink.prune import choose_structure, importance

    model = fresh(inputs)
    heads, neurons = importance(model, inputs[3], small_cfg(importance_examples=64), torch.device("cpu"))
    assert [h.shape[0] for h in heads] == [4] * 4 and [n.shape[0] for n in neurons] == [128] * 4
    assert all(bool((h >= 0).all()) and float(h.sum()) > 0 for h in heads + neurons)
    keep_heads, keep_neurons = choose_structure(heads, neurons, 0.5, 0.25)
    for h, kept in zip(heads, keep_heads, strict=True):
        assert len(kept) == 2
        assert min(h[kept]) >= max(h[[i for i in range(4) if i not in kept]])
    assert all(len(k) == 96 for k in keep_neurons)


def test_structured_recovery_trains_the_smaller_model(inputs):
    from shrink.prune import structured_prune_model

    model = fresh(inputs)
    stats = structured_prune_model(model, inputs[3], small_cfg(importance_examples=64), torch.device("cpu"))
    # The defaults remove a quarter of the 4 heads and half of the 128 FFN neurons of every layer.
    assert stats["structure"]["heads"] == [3, 3, 3, 3] and stats["structure"]["intermediate"] == [64] * 4
    assert stats["parameters_after"] < stats["parameters_before"] and stats["steps"] == 28


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "key, value",
    [("target_sparsity", 1.0), ("target_sparsity", -0.1), ("initial_sparsity", 1.5), ("head_fraction", 1.0)],
)
def test_fractions_outside_unit_interval_are_refused(key, value):
    with pytest.raises(ShrinkError, match=rf"prune\.{key}: must be in \[0, 1\)"):
        from_dict(PruneConfig, {key: value}, "prune")


def test_initial_above_target_is_refused():
    with pytest.raises(ShrinkError, match="prune.initial_sparsity: 0.5 is above target_sparsity 0.3"):
        from_dict(PruneConfig, {"initial_sparsity": 0.5, "target_sparsity": 0.3}, "prune")


def test_model_without_linear_layers_is_refused():
    from transformers import BertConfig, BertForSequenceClassification

    from shrink.prune import prunable_weights

    model = BertForSequenceClassification(
        BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=0, num_attention_heads=2, intermediate_size=8)
    )
    with pytest.raises(ShrinkError, match="no Linear layers to prune"):
        prunable_weights(model)


def test_unknown_method_is_refused(inputs):
    from shrink.prune import make_pruner

    with pytest.raises(ShrinkError, match="method: 'random' is not one of 'magnitude', 'movement'"):
        make_pruner(fresh(inputs), small_cfg(), "random")


def test_head_counts_that_leave_a_layer_without_heads_are_refused(inputs):
    from shrink.prune import choose_structure, remove_heads_and_neurons

    heads, neurons = [torch.rand(4) for _ in range(4)], [torch.rand(128) for _ in range(4)]
    with pytest.raises(
        ShrinkError, match="head_fraction: 0.9 of layer 0's 4 heads removes 4, leaving it no attention heads"
    ):
        choose_structure(heads, neurons, 0.9, 0.5)
    with pytest.raises(ShrinkError, match="layer 2 would be left with no attention heads"):
        remove_heads_and_neurons(fresh(inputs), [[0], [1], [], [2]], [[0]] * 4)


def test_non_bert_model_is_refused_for_structured_pruning():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    from shrink.sparse import bert_layers

    model = DistilBertForSequenceClassification(
        DistilBertConfig(vocab_size=50, dim=16, n_layers=1, n_heads=2, hidden_dim=8)
    )
    with pytest.raises(ShrinkError, match="structured pruning needs a BERT-style encoder"):
        bert_layers(model)


STRUCTURED_TEXTS = ["what is my credit score", "how do i say thanks in german", "set the language to french"]


def _structured_onnx(inputs, tmp_path, heads):
    """A sliced copy of the tiny model (``heads`` kept per layer, every other FFN neuron), saved and exported."""
    from shrink.config import QuantizeConfig
    from shrink.onnx_export import export_onnx
    from shrink.prune import remove_heads_and_neurons, save_pruned

    model = fresh(inputs)
    remove_heads_and_neurons(model, heads, [list(range(0, 128, 2))] * 4)
    save_pruned(
        model,
        inputs[1],
        tmp_path / "s",
        small_cfg(),
        label_names=inputs[3].label_names,
        technique="prune-structured",
        settings={"max_length": 32},
        parent=inputs[2],
        metrics={},
    )
    return export_onnx(tmp_path / "s", tmp_path / "onnx", QuantizeConfig(), STRUCTURED_TEXTS)


def test_structured_model_exports_to_onnx_with_parity(inputs, tmp_path):
    from shrink.runtime import open_classifier

    meta = _structured_onnx(inputs, tmp_path, [[1, 3]] * 4)
    assert meta.metrics["parity_agreement"] == 1.0
    torch_logits = open_classifier(tmp_path / "s").predict_all(STRUCTURED_TEXTS)[1]
    onnx_logits = open_classifier(tmp_path / "onnx").predict_all(STRUCTURED_TEXTS)[1]
    assert abs(torch_logits - onnx_logits).max() < 1e-4


@pytest.mark.parametrize(
    "heads", [[[1, 3]] * 4, [[0], [1, 2], [0, 1, 3], [2]]], ids=["same-heads-per-layer", "heads-vary-by-layer"]
)
def test_structured_model_fuses_attention_in_onnx_runtime(inputs, tmp_path, heads):
    """The narrower attention of a pruned model is still fused (where its speed comes from), with parity."""
    from shrink.config import QuantizeConfig
    from shrink.onnx_export import optimize_onnx

    _structured_onnx(inputs, tmp_path, heads)
    meta = optimize_onnx(tmp_path / "onnx", tmp_path / "opt", QuantizeConfig())
    assert meta.metrics["parity_agreement"] == 1.0
    assert meta.metrics["parity_max_abs_diff"] < 1e-4
    if len({len(h) for h in heads}) == 1:
        assert meta.extra["fused_operators"].get("Attention") == 4, meta.extra["fused_operators"]
    else:
        # One head count per graph is what ORT's fusion takes: a per-layer structure runs unfused, and says so.
        assert "Attention" not in meta.extra["fused_operators"]
        assert any("no Attention fusion" in w for w in meta.extra["warnings"])
