"""ONNX export (parity, dynamic axes, runtime settings), graph optimization (fusions) and their bad inputs."""

from __future__ import annotations

import json
import shutil

import pytest

from shrink.config import QuantizeConfig, RuntimeConfig, from_dict
from shrink.errors import ShrinkError

# --------------------------------------------------------------------------- export


def test_export_matches_pytorch_on_the_slice(trained, exported, test_texts):
    import numpy as np
    import onnx

    from shrink.artifact import read_meta
    from shrink.runtime import open_classifier

    meta = read_meta(exported)
    assert (meta.format, meta.precision, meta.technique) == ("onnx", "fp32", "onnx-export")
    assert meta.parent["content_hash"] == read_meta(trained).content_hash()
    assert meta.metrics["parity_agreement"] == 1.0
    assert meta.metrics["parity_examples"] == len(test_texts)
    assert meta.metrics["parity_max_abs_diff"] < 1e-4
    assert meta.settings["max_length"] == 32  # tokenizes exactly as its parent

    model = onnx.load(str(exported / "model.onnx"))
    onnx.checker.check_model(model)
    assert any(o.domain in ("", "ai.onnx") and o.version == 17 for o in model.opset_import)
    for graph_input in model.graph.input:  # batch and sequence are free: serving pads per batch
        dims = graph_input.type.tensor_type.shape.dim
        assert [d.dim_param for d in dims] == ["batch", "sequence"]

    # Independently of the recorded metrics: a batch whose length differs from the traced one.
    onnx_clf, torch_clf = open_classifier(exported), open_classifier(trained)
    texts = test_texts[:7] + ["a much longer request than any of the traced examples " * 3]
    enc = torch_clf.encode(texts)
    diff = np.abs(onnx_clf.logits(enc) - torch_clf.logits(enc)).max()
    assert diff < 1e-4
    parity = json.loads((exported / "parity.json").read_text())
    assert parity["texts"] == test_texts and len(parity["logits"]) == len(test_texts)


def test_runtime_settings_are_what_the_session_runs(tmp_path, exported):
    from shrink.onnx_export import optimize_onnx
    from shrink.runtime import open_classifier

    runtime = RuntimeConfig(intra_op_threads=2, inter_op_threads=1, graph_optimization_level="basic")
    meta = optimize_onnx(exported, tmp_path / "opt", QuantizeConfig(runtime=runtime))
    assert meta.runtime == {
        "intra_op_threads": 2,
        "inter_op_threads": 1,
        "graph_optimization_level": "basic",
        "execution_provider": "CPUExecutionProvider",
    }
    opts = open_classifier(tmp_path / "opt").session.get_session_options()
    assert opts.intra_op_num_threads == 2
    assert str(opts.graph_optimization_level).endswith("ORT_ENABLE_BASIC")


# --------------------------------------------------------------------------- optimization


def test_optimizer_fuses_bert_operators(optimized, exported):
    import onnx

    from shrink.artifact import read_meta

    meta = read_meta(optimized)
    fused = meta.extra["fused_operators"]
    # The tiny BERT has 4 layers: one Attention and GELU per layer, two SkipLayerNorms, one embedding block.
    assert fused["Attention"] == 4
    assert fused["SkipLayerNormalization"] == 8
    assert sum(fused.get(k, 0) for k in ("BiasGelu", "FastGelu", "Gelu")) == 4
    assert fused["EmbedLayerNormalization"] == 1
    assert meta.extra["warnings"] == []
    assert meta.metrics["fused_Attention"] == 4
    assert meta.metrics["parity_agreement"] == 1.0
    # The saved graph really holds the fused ops and no longer the Softmax of unfused attention.
    ops = [n.op_type for n in onnx.load(str(optimized / "model.onnx")).graph.node]
    assert ops.count("Attention") == 4 and "Softmax" not in ops
    assert "Softmax" in [n.op_type for n in onnx.load(str(exported / "model.onnx")).graph.node]


def test_missing_fusion_is_a_recorded_warning(tmp_path, minilm_dir, test_texts):
    """A ReLU encoder has no GELU to fuse: the step must say so in the artifact, not pass silently."""
    from transformers import BertConfig, BertForSequenceClassification

    from shrink.artifact import read_meta
    from shrink.models import load_tokenizer, save_classifier
    from shrink.onnx_export import export_onnx, optimize_onnx

    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_act="relu",
        num_labels=3,
    )
    save_classifier(
        BertForSequenceClassification(config).eval(),
        load_tokenizer(minilm_dir),
        tmp_path / "relu",
        label_names=["a", "b", "c"],
        technique="test",
    )
    export_onnx(tmp_path / "relu", tmp_path / "onnx", QuantizeConfig(), test_texts[:8])
    optimize_onnx(tmp_path / "onnx", tmp_path / "opt", QuantizeConfig())
    meta = read_meta(tmp_path / "opt")
    assert len(meta.extra["warnings"]) == 1 and "no Gelu fusion" in meta.extra["warnings"][0]
    assert meta.metrics["fusion_warnings"] == 1
    assert meta.extra["fused_operators"]["Attention"] == 1


# --------------------------------------------------------------------------- bad input


def test_bare_encoder_is_not_a_classifier(tmp_path, minilm_dir, test_texts):
    from shrink.onnx_export import export_onnx

    with pytest.raises(ShrinkError, match="not a sequence classifier.*BertModel"):
        export_onnx(minilm_dir, tmp_path / "x", QuantizeConfig(), test_texts[:4])


def test_artifact_without_classifier_architecture_is_refused(tmp_path, trained, test_texts):
    from shrink.artifact import read_meta, write_artifact
    from shrink.onnx_export import export_onnx

    meta = read_meta(trained)
    shutil.copytree(trained, tmp_path / "enc")
    config = json.loads((tmp_path / "enc" / "config.json").read_text())
    config["architectures"] = ["BertModel"]
    (tmp_path / "enc" / "config.json").write_text(json.dumps(config))
    write_artifact(
        tmp_path / "enc", format="pytorch", precision="fp32", label_names=meta.label_names, technique="fine-tune"
    )
    with pytest.raises(ShrinkError, match=r"config.json: not a sequence classifier"):
        export_onnx(tmp_path / "enc", tmp_path / "x", QuantizeConfig(), test_texts[:4])


def test_opset_the_runtime_lacks(tmp_path, trained, test_texts):
    from shrink.onnx_export import export_onnx

    with pytest.raises(ShrinkError, match=r"opset 99 is not supported by the installed onnxruntime"):
        export_onnx(trained, tmp_path / "x", QuantizeConfig(opset=99), test_texts[:4])
    with pytest.raises(ShrinkError, match=r"quantize.opset: 16 is too old"):
        from_dict(QuantizeConfig, {"opset": 16}, "quantize")


def test_corrupt_onnx_file(tmp_path, exported):
    from shrink.artifact import read_meta, write_artifact
    from shrink.onnx_export import optimize_onnx

    meta = read_meta(exported)
    shutil.copytree(exported, tmp_path / "bad")
    (tmp_path / "bad" / "model.onnx").write_bytes(b"\x08\x07garbage, not a protobuf" * 10)
    write_artifact(
        tmp_path / "bad",
        format="onnx",
        precision="fp32",
        label_names=meta.label_names,
        technique="onnx-export",
        extra=meta.extra,
    )
    with pytest.raises(ShrinkError, match=r"model.onnx: not a valid ONNX model"):
        optimize_onnx(tmp_path / "bad", tmp_path / "x", QuantizeConfig())
    # A file damaged after sealing is caught by its hash before anything parses it.
    (tmp_path / "bad" / "model.onnx").write_bytes(b"truncated")
    with pytest.raises(ShrinkError, match="sha256 mismatch"):
        optimize_onnx(tmp_path / "bad", tmp_path / "y", QuantizeConfig())


def test_export_refuses_onnx_input(tmp_path, exported, test_texts):
    from shrink.onnx_export import export_onnx

    with pytest.raises(ShrinkError, match="format 'onnx'; expected a PyTorch classifier artifact"):
        export_onnx(exported, tmp_path / "x", QuantizeConfig(), test_texts[:4])


def test_serving_tokenizer_gives_the_hf_tokenizers_ids(exported, test_texts):
    """The Rust tokenizer path of open_classifier: same ids, masks and padding as the HF wrapper."""
    import numpy as np

    from shrink.runtime import open_classifier

    clf = open_classifier(exported)
    assert clf._backend is not None  # the fast path is what is tested, not the fallback
    long = "a much longer request than any max_length allows " * 20
    texts = test_texts + [long, "", "héllo wörld", "PIN change please!!"]
    for size in (1, 5, len(texts)):
        for i in range(0, len(texts), size):
            batch = texts[i : i + size]
            ours = clf.encode(batch)
            ref = clf.tokenizer(batch, padding=True, truncation=True, max_length=clf.max_length, return_tensors="np")
            assert set(ours) == set(ref.keys())
            for name, value in ours.items():
                assert value.dtype == np.int64
                np.testing.assert_array_equal(value, ref[name])
    assert clf.encode([long])["input_ids"].shape[1] == clf.max_length


def test_parity_texts_are_validation_texts_never_test_texts(clinc_slice):
    """The INT8 search chooses by agreement on these texts, so none may come from the test split."""
    from shrink.data import load_prepared
    from shrink.onnx_export import parity_texts

    dd, _ = load_prepared(clinc_slice)
    validation, test = set(dd["validation"]["text"]), set(dd["test"]["text"])
    texts = parity_texts(clinc_slice, 10_000)
    assert len(texts) == len(dd["validation"]) and set(texts) == validation
    few = parity_texts(clinc_slice, 20)
    assert len(few) == 20 and set(few) <= validation - test and few == parity_texts(clinc_slice, 20)
