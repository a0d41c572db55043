"""ORT dynamic INT8's variant search: the LayerNorm split, the variants a config builds, the choice rule.

Timings are measured by the step but never asserted here (they belong to bench/): the tests
check what each technique does to the graph ONNX Runtime runs, to the predictions, and which
variant the rule keeps for given figures.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from shrink.config import Int8SearchConfig, QuantizeConfig, from_dict
from shrink.errors import ShrinkError
from tests.factories import built


def _one(kernel: str, layernorm: str, **search) -> QuantizeConfig:
    """A config whose search builds exactly one variant (so the step does not time anything)."""
    return QuantizeConfig(
        search=Int8SearchConfig(kernels=[kernel], layernorm=[layernorm], **search),
    )


def _runtime_ops(directory: Path) -> dict[str, int]:
    """Op counts of the graph ONNX Runtime actually runs: the artifact's file after ORT's load-time fusions."""
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    opts.optimized_model_filepath = str(directory / "runtime-graph.onnx.tmp")
    ort.InferenceSession(str(directory / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    counts: dict[str, int] = {}
    for node in onnx.load(opts.optimized_model_filepath).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    Path(opts.optimized_model_filepath).unlink()
    return counts


def _logits(directory: Path, texts: list[str]) -> np.ndarray:
    from shrink.runtime import open_classifier

    return open_classifier(directory).predict_all(texts)[1]


def _same_up_to_rounding(fp32: np.ndarray, skip: np.ndarray, split: np.ndarray) -> None:
    """The split form computes what SkipLayerNormalization computes, in another float summation order.

    The next layer's dynamic activation quantization can round a value one step the other
    way, so the logits are not bit-equal; the difference must stay far below INT8's own
    error against FP32, and the predictions (but for a near-tie) must not change.
    """
    assert np.abs(skip - split).max() < 0.2 * np.abs(fp32 - skip).max()
    assert (skip.argmax(-1) == split.argmax(-1)).mean() >= 0.99


@pytest.fixture(scope="module")
def per_channel_skip(tmp_path_factory, optimized):
    from shrink.quantize import quantize_ort_dynamic

    cfg = _one("integer-per-channel", "skip")
    return built(tmp_path_factory, "dyn-pc-skip", lambda out: quantize_ort_dynamic(optimized, out, cfg))


@pytest.fixture(scope="module")
def per_channel_split(tmp_path_factory, optimized):
    from shrink.quantize import quantize_ort_dynamic

    cfg = _one("integer-per-channel", "split")
    return built(tmp_path_factory, "dyn-pc-split", lambda out: quantize_ort_dynamic(optimized, out, cfg))


@pytest.fixture(scope="module")
def searched(tmp_path_factory, optimized):
    """The shipped default: every kernel x both LayerNorm forms, judged and timed, the winner kept."""
    from shrink.quantize import quantize_ort_dynamic

    return built(tmp_path_factory, "dyn-auto", lambda out: quantize_ort_dynamic(optimized, out, QuantizeConfig()))


# --------------------------------------------------------------------------- the LayerNorm split


def test_split_leaves_no_skip_layernorm_for_ort_to_run(optimized, per_channel_skip, per_channel_split, test_texts):
    """ORT fuses Add + LayerNormalization back into SkipLayerNormalization at load; the split form survives it."""
    from shrink.artifact import read_meta

    skip_ops, split_ops = _runtime_ops(per_channel_skip), _runtime_ops(per_channel_split)
    # 4 layers x 2 residual LayerNorms (after attention, after the FFN).
    assert skip_ops.get("SkipLayerNormalization") == 8 and "LayerNormalization" not in skip_ops
    assert "SkipLayerNormalization" not in split_ops
    assert split_ops["LayerNormalization"] == 8 and split_ops["Sum"] == 8
    # The quantized MatMuls are the same in both: only the LayerNorms differ.
    for op in ("QAttention", "DynamicQuantizeMatMul", "QEmbedLayerNormalization"):
        assert skip_ops.get(op) == split_ops.get(op) and split_ops.get(op), op
    assert read_meta(per_channel_split).settings["layernorm"] == "split"

    _same_up_to_rounding(
        _logits(optimized, test_texts), _logits(per_channel_skip, test_texts), _logits(per_channel_split, test_texts)
    )


def test_split_on_the_plain_export_turns_residual_adds_into_sums(tmp_path, exported, test_texts):
    """The plain export's Add -> LayerNormalization: the Add becomes Sum, and ORT then fuses none of them."""
    import onnx

    from shrink.quantize import quantize_ort_dynamic, split_layernorm

    model = onnx.load(str(exported / "model.onnx"))
    adds_before = sum(n.op_type == "Add" for n in model.graph.node)
    count = split_layernorm(model)
    assert count == 4 * 2 + 1  # 4 layers x 2 residual LayerNorms + the embeddings' LayerNorm
    assert sum(n.op_type == "Add" for n in model.graph.node) == adds_before - count
    assert sum(n.op_type == "Sum" for n in model.graph.node) == count

    # Quantized (shape inference runs first, which is what lets ORT match its fusion at load):
    skip = quantize_ort_dynamic(exported, tmp_path / "skip", _one("integer-per-channel", "skip"))
    split = quantize_ort_dynamic(exported, tmp_path / "split", _one("integer-per-channel", "split"))
    assert skip.settings["graph"] == split.settings["graph"] == "plain"
    skip_ops, split_ops = _runtime_ops(tmp_path / "skip"), _runtime_ops(tmp_path / "split")
    assert skip_ops.get("SkipLayerNormalization", 0) >= 8
    assert "SkipLayerNormalization" not in split_ops and split_ops["LayerNormalization"] == count
    _same_up_to_rounding(
        _logits(exported, test_texts), _logits(tmp_path / "skip", test_texts), _logits(tmp_path / "split", test_texts)
    )


def test_split_keeps_a_layernorm_whose_statistics_are_used():
    """A SkipLayerNormalization whose mean output feeds another node cannot become LayerNormalization."""
    from onnx import TensorProto, helper

    from shrink.quantize import split_layernorm

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])
    m = helper.make_tensor_value_info("m2", TensorProto.FLOAT, None)
    gamma = helper.make_tensor("g", TensorProto.FLOAT, [8], [1.0] * 8)
    nodes = [
        helper.make_node("SkipLayerNormalization", ["x", "x", "g"], ["y", "mean"], domain="com.microsoft"),
        helper.make_node("Identity", ["mean"], ["m2"]),
    ]
    graph = helper.make_graph(nodes, "g", [x], [y, m], [gamma])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    assert split_layernorm(model) == 0
    assert [n.op_type for n in model.graph.node] == ["SkipLayerNormalization", "Identity"]
    old = helper.make_model(
        helper.make_graph(nodes[:1], "g", [x], [y], [gamma]), opset_imports=[helper.make_opsetid("", 16)]
    )
    assert split_layernorm(old) == 0  # LayerNormalization needs opset 17


# --------------------------------------------------------------------------- the search in the step


def test_search_builds_judges_and_times_every_variant(optimized, searched):
    from shrink.artifact import read_meta

    meta = read_meta(searched)
    rows = {r["variant"]: r for r in meta.extra["variants"]}
    kernels = ("integer-per-tensor", "integer-per-channel", "nbits")
    assert set(rows) == {f"{k}.fused.emb-int8.ln-{ln}" for k in kernels for ln in ("skip", "split")}
    for name, row in rows.items():
        assert 0 < row["agreement"] <= 1 and row["size_mb"] > 0 and row["p50_ms"] > 0, name
        assert row["requests"] == 8 * 60  # timing_rounds x timing_requests
        assert meta.metrics[f"p50_ms.{name}"] == row["p50_ms"]
        assert meta.metrics[f"agreement.{name}"] == row["agreement"]
    winner = meta.settings["variant"]
    assert meta.metrics["variant_p50_ms"] == rows[winner]["p50_ms"]
    assert meta.parent["content_hash"] == read_meta(optimized).content_hash()
    # The winner is what the rule picks from the recorded figures, and the file holds that variant.
    from shrink.quantize import choose_variant

    assert choose_variant(rows, QuantizeConfig().search)[0] == winner
    ops = meta.extra["quantized_ops"]
    kernel = meta.settings["kernel"]
    assert ops["QAttention"] == 4 and ops["QEmbedLayerNormalization"] == 1
    assert ops.get("MatMulNBits", 0) == (12 if kernel == "nbits" else 0)
    assert ops.get("MatMulInteger", 0) == (0 if kernel == "nbits" else 12)
    # The artifact's agreement is its own, measured again after sealing, and matches the variant's row.
    assert meta.metrics["agreement_with_fp32"] == pytest.approx(rows[winner]["agreement"])


def test_plain_graph_variant_comes_from_the_plain_export(tmp_path, optimized, exported):
    from shrink.artifact import read_meta
    from shrink.quantize import quantize_ort_dynamic

    cfg = _one("integer-per-channel", "split", graphs=["plain"])
    meta = quantize_ort_dynamic(
        optimized, tmp_path / "q", cfg, parent_uri="s3://x/opt", plain_dir=exported, plain_uri="s3://x/plain"
    )
    assert (
        meta.settings["graph"] == "plain" and meta.settings["variant"] == "integer-per-channel.plain.emb-int8.ln-split"
    )
    assert meta.parent["content_hash"] == read_meta(exported).content_hash()
    assert meta.parent["uri"] == "s3://x/plain"
    assert "QAttention" not in meta.extra["quantized_ops"]  # the plain export has no fused Attention
    assert meta.extra["quantized_ops"]["MatMulInteger"] == 4 * 6
    with pytest.raises(ShrinkError, match="plain-graph input holds fused ops"):
        quantize_ort_dynamic(optimized, tmp_path / "bad", cfg, plain_dir=optimized)


def test_fp32_embeddings_variant_keeps_the_embeddings(tmp_path, optimized):
    from shrink.quantize import quantize_ort_dynamic

    meta = quantize_ort_dynamic(optimized, tmp_path / "q", _one("integer-per-tensor", "split", embeddings=["fp32"]))
    assert "QEmbedLayerNormalization" not in meta.extra["quantized_ops"]
    assert meta.metrics["compression"] < 1.2  # nearly every byte of the tiny model is embeddings


def test_without_a_reference_the_safest_kernel_is_kept(tmp_path, optimized):
    """No parity.json: neither accuracy nor real texts to time on, so no search; MatMulNBits is kept."""
    import shutil

    from shrink.artifact import read_meta, reseal
    from shrink.quantize import quantize_ort_dynamic

    bare = tmp_path / "bare"
    shutil.copytree(optimized, bare)
    (bare / "parity.json").unlink()
    like = read_meta(optimized)
    reseal(bare, replace(like, extra={k: v for k, v in like.extra.items() if k != "reference"}))
    meta = quantize_ort_dynamic(bare, tmp_path / "q", QuantizeConfig())
    assert meta.settings["kernel"] == "nbits"
    assert "agreement_with_fp32" not in meta.metrics


# --------------------------------------------------------------------------- which variants, which winner


def _v(kernel, graph="fused", embeddings="int8", layernorm="skip"):
    from shrink.quantize import DynamicVariant

    return DynamicVariant(kernel, graph, embeddings, layernorm)


def test_variants_a_config_builds():
    from shrink.quantize import dynamic_variants

    names = [v.name for v in dynamic_variants(QuantizeConfig(), ["fused"])]
    assert len(names) == 6 and names[0] == "integer-per-tensor.fused.emb-int8.ln-skip"
    # An explicit kernel restricts the search to it; per_channel picks MatMulInteger's weight scales.
    cfg = QuantizeConfig(matmul_kernel="integer", per_channel=False)
    assert {v.kernel for v in dynamic_variants(cfg, ["fused"])} == {"integer-per-tensor"}
    assert {v.kernel for v in dynamic_variants(QuantizeConfig(matmul_kernel="nbits"), ["fused"])} == {"nbits"}
    # Embeddings follow quantize_embeddings unless listed.
    assert {v.embeddings for v in dynamic_variants(QuantizeConfig(quantize_embeddings=False), ["fused"])} == {"fp32"}
    # A listed graph the step was not given is skipped; with none of them given, the input's graph is used.
    both = replace(QuantizeConfig(), search=Int8SearchConfig(graphs=["fused", "plain"]))
    assert {v.graph for v in dynamic_variants(both, ["fused"])} == {"fused"}
    assert {v.graph for v in dynamic_variants(both, ["fused", "plain"])} == {"fused", "plain"}
    assert {v.graph for v in dynamic_variants(QuantizeConfig(), ["plain"])} == {"plain"}
    # What quantize_dynamic is asked for, per variant.
    assert _v("integer-per-tensor").op_types() == ["Attention", "MatMul", "Gather", "EmbedLayerNormalization"]
    assert _v("nbits", embeddings="fp32").op_types() == ["Attention"]
    assert _v("integer-per-tensor").per_channel(QuantizeConfig()) is False
    assert _v("nbits").per_channel(QuantizeConfig(per_channel=False)) is False


def _rows(**figures):
    """name -> row from name=(agreement, p50_ms, size_mb)."""
    return {n: {"agreement": a, "p50_ms": t, "size_mb": s} for n, (a, t, s) in figures.items()}


def test_choice_keeps_the_fastest_within_the_budget():
    from shrink.quantize import choose_variant

    search = Int8SearchConfig()  # min 0.97, drop 0.005, tie 3%
    # The demo student's figures (agreement on 500 parity texts, step p50): per-tensor is fastest but agrees
    # 1.4 points less than the best, so per-channel with the split LayerNorms wins.
    rows = _rows(
        tensor_split=(0.978, 0.350, 18.14),
        channel_split=(0.990, 0.379, 18.19),
        channel_skip=(0.990, 0.466, 18.19),
        nbits_split=(0.992, 0.569, 18.27),
    )
    assert choose_variant(rows, search) == ("channel_split", "fastest within the accuracy budget")
    # A looser budget lets the per-tensor variant in.
    assert choose_variant(rows, replace(search, max_agreement_drop=0.02))[0] == "tensor_split"


def test_choice_within_the_tie_margin_prefers_agreement_then_size():
    from shrink.quantize import choose_variant

    search = Int8SearchConfig()
    rows = _rows(a=(0.990, 0.400, 18.2), b=(0.992, 0.410, 18.3), c=(0.995, 0.500, 18.0))
    winner, why = choose_variant(rows, search)
    assert winner == "b" and "within 3% of the fastest (a)" in why  # c agrees most but is 25% slower
    rows = _rows(a=(0.990, 0.400, 18.2), b=(0.990, 0.405, 18.1))
    assert choose_variant(rows, search)[0] == "b"  # same agreement, smaller
    assert choose_variant(rows, replace(search, tie_margin=0.0))[0] == "a"


def test_choice_when_nothing_reaches_the_floor_or_nothing_is_known():
    from shrink.quantize import choose_variant

    rows = _rows(fast=(0.90, 0.3, 18.0), slow=(0.96, 0.6, 18.0), slower=(0.958, 0.7, 18.0))
    winner, why = choose_variant(rows, Int8SearchConfig())
    assert winner == "slow" and "no variant reaches min_agreement" in why
    # Without agreement figures (no reference) the rows are judged on speed alone; without timings, one stands.
    rows = {"a": {"p50_ms": 0.5, "size_mb": 18.0}, "b": {"p50_ms": 0.4, "size_mb": 18.0}}
    assert choose_variant(rows, Int8SearchConfig())[0] == "b"
    assert choose_variant({"only": {"agreement": 0.99, "size_mb": 18.0}}, Int8SearchConfig())[0] == "only"
    with pytest.raises(ShrinkError, match="no variant was built"):
        choose_variant({}, Int8SearchConfig())


# --------------------------------------------------------------------------- bad config


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ({"kernels": []}, "quantize.search.kernels: must name at least one choice"),
        ({"kernels": ["nbits", "nbits"]}, "quantize.search.kernels: ['nbits', 'nbits'] repeats a choice"),
        ({"kernels": ["int4"]}, "quantize.search.kernels[0]: 'int4' is not one of"),
        ({"layernorm": ["fast"]}, "quantize.search.layernorm[0]: 'fast' is not one of"),
        ({"graphs": []}, "quantize.search.graphs: must name at least one choice"),
        ({"embeddings": []}, "quantize.search.embeddings: must name at least one choice"),
        ({"max_agreement_drop": 2}, "quantize.search.max_agreement_drop: must be in [0, 1]"),
        ({"tie_margin": 1.0}, "quantize.search.tie_margin: must be in [0, 1)"),
        ({"timing_rounds": 0}, "quantize.search.timing_rounds: must be >= 1"),
        ({"kernel": ["nbits"]}, "quantize.search: unknown key 'kernel'"),
    ],
)
def test_bad_search_config_is_one_line(search, message):
    with pytest.raises(ShrinkError) as exc:
        from_dict(QuantizeConfig, {"search": search}, "quantize")
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


def test_matmul_kernel_names_are_checked():
    with pytest.raises(ShrinkError, match="quantize.matmul_kernel: 'int8' is not one of 'auto', 'nbits', 'integer'"):
        from_dict(QuantizeConfig, {"matmul_kernel": "int8"}, "quantize")
