"""Vocabulary pruning on the tiny BERT and real CLINC150 texts: rows, tokenization, logits, export, component."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace

import numpy as np
import pytest
from kfp.dsl import Dataset, Metrics, Model

from components.prune_vocabulary.component import prune_vocabulary as prune_component
from shrink.artifact import read_meta, reseal
from shrink.config import PipelineConfig, QuantizeConfig, VocabularyConfig, from_dict, load_pipeline_config
from shrink.errors import ShrinkError
from shrink.vocab import MAP_FILE, TOKENIZER_FILE, VOCAB_TXT, choose_rows, prune_vocabulary, unknown_counts
from tests.factories import CLINC, built

ODD = ["xylophone quizzically", "naïve café déjà vu", "zzzqqq 12345 !!", "東京 tokyo", "PIN change please!!", ""]


def _tok(directory):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
    tok.no_truncation()
    tok.no_padding()
    return tok


def _splits(dataset):
    from shrink.data import load_prepared

    dd, _ = load_prepared(dataset)
    return {s: list(dd[s]["text"]) for s in ("train", "validation", "test")}


def _kept(directory) -> list[int]:
    return json.loads((directory / MAP_FILE).read_text())["kept_ids"]


# The domain's pieces only (no fill with common pieces): the case where most test words must fall back.
DOMAIN_ONLY = VocabularyConfig(keep_fraction=None)


@pytest.fixture(scope="module")
def pruned(tmp_path_factory, trained, clinc_slice):
    return built(tmp_path_factory, "vocab-pruned", lambda o: prune_vocabulary(trained, clinc_slice, o, DOMAIN_ONLY))


@pytest.fixture(scope="module")
def clinc_test_texts():
    """All 5,500 CLINC150 (plus) test texts, in-scope and out-of-scope."""
    raw = json.loads((CLINC / "data_oos_plus.json").read_text())
    return [text for key in ("test", "oos_test") for text, _ in raw[key]]


# --------------------------------------------------------------------------- which rows


def test_keeps_source_pieces_characters_and_specials_and_nothing_test_only(trained, pruned, clinc_slice):
    full, small = _tok(trained), _tok(pruned)
    vocab, kept_vocab = full.get_vocab(), small.get_vocab()
    splits = _splits(clinc_slice)
    source = {p for s in ("train", "validation") for e in full.encode_batch(splits[s]) for p in e.tokens}
    assert source <= set(kept_vocab)
    singles = {p for p in vocab if len(p) == 1 or (p.startswith("##") and len(p) == 3)}
    assert len(singles) > 1900 and singles <= set(kept_vocab)
    # Test-only pieces longer than a character are dropped: the test split never chooses the vocabulary.
    test_only = {p for e in full.encode_batch(splits["test"]) for p in e.tokens} - source - singles
    assert test_only and not test_only & set(kept_vocab)
    # The special tokens, renumbered in order: [PAD] keeps 0, the others follow it.
    assert [kept_vocab[t] for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [0, 1, 2, 3, 4]
    assert not any(p.startswith("[unused") for p in kept_vocab)
    meta = read_meta(pruned)
    assert meta.technique == "prune-vocabulary" and meta.parent["content_hash"] == read_meta(trained).content_hash()
    assert meta.metrics["rows_before"] == len(vocab) == 30522
    assert meta.metrics["rows_after"] == len(kept_vocab) == len(_kept(pruned))
    assert meta.metrics["removed_fraction"] >= 0.6
    assert meta.settings["max_length"] == read_meta(trained).settings["max_length"]
    assert meta.settings["texts"] == {"train": len(splits["train"]), "validation": len(splits["validation"])} | {
        "transfer": 0
    }


def test_embedding_rows_are_the_kept_rows_of_the_parent(trained, pruned):
    from shrink.models import load_classifier

    before = load_classifier(trained).get_input_embeddings().weight.detach().numpy()
    model = load_classifier(pruned)
    after = model.get_input_embeddings().weight.detach().numpy()
    kept = _kept(pruned)
    assert after.shape == (len(kept), before.shape[1])
    np.testing.assert_array_equal(after, before[kept])
    config = json.loads((pruned / "config.json").read_text())
    assert config["vocab_size"] == len(kept) and config["pad_token_id"] == 0
    assert model.get_input_embeddings().padding_idx == 0
    # Every id the tokenizer can produce has a row, and every row a piece.
    assert max(_tok(pruned).get_vocab().values()) == len(kept) - 1


def test_min_count_keeps_fewer_rows(tmp_path, trained, pruned, clinc_slice):
    meta = prune_vocabulary(trained, clinc_slice, tmp_path / "m3", replace(DOMAIN_ONLY, min_count=3))
    assert meta.metrics["rows_after"] < read_meta(pruned).metrics["rows_after"]
    assert meta.settings["rows"]["below_min_count"] > 0
    assert set(_kept(tmp_path / "m3")) < set(_kept(pruned))


def test_common_pieces_fill_the_rows_up_to_keep_fraction(tmp_path, trained, pruned, clinc_slice, clinc_test_texts):
    meta = prune_vocabulary(trained, clinc_slice, tmp_path / "fill", VocabularyConfig(keep_fraction=0.4))
    kept, domain = _kept(tmp_path / "fill"), set(_kept(pruned))
    assert len(kept) == meta.metrics["rows_after"] == math.ceil(0.4 * 30522)
    assert domain < set(kept) and meta.settings["rows"]["frequent"] == len(kept) - len(domain)
    # The fill is the lowest ids the domain left out, placeholders ([unused5]) skipped.
    vocab = _tok(trained).get_vocab()
    placeholders = {i for p, i in vocab.items() if p.startswith("[unused")}
    spare = [i for i in range(30522) if i not in domain and i not in placeholders]
    assert sorted(set(kept) - domain) == spare[: len(kept) - len(domain)]
    assert vocab["the"] in kept and not placeholders & set(kept)
    # Its effect: far fewer CLINC150 test texts need smaller pieces than with the domain's pieces alone.
    full = _tok(trained).encode_batch(clinc_test_texts)

    def falling_back(rows):
        return sum(not set(e.ids) <= set(rows) for e in full)

    assert falling_back(kept) < 0.6 * falling_back(domain)
    assert (unknown_counts(tmp_path / "fill", clinc_test_texts) <= unknown_counts(trained, clinc_test_texts)).all()


def test_rows_for_a_character_without_its_own_pieces_are_kept():
    tokenizer = {
        "added_tokens": [{"id": 0, "content": "[UNK]", "special": True}],
        "model": {
            "type": "WordPiece",
            "unk_token": "[UNK]",
            "continuing_subword_prefix": "##",
            "vocab": {"[UNK]": 0, "a": 1, "##a": 2, "b": 3, "##b": 4, "ab": 5, "aж": 6, "ba": 7},
        },
    }
    choice = choose_rows(tokenizer, counts={7: 2}, rows=8)
    # [UNK]; the characters a and b in both forms; aж (ж cannot be spelled otherwise); ba (used); not ab.
    assert choice.keep == [0, 1, 2, 3, 4, 6, 7]
    assert choose_rows(tokenizer, counts={7: 2}, rows=8, min_count=3).keep == [0, 1, 2, 3, 4, 6]
    # Filled to 8 rows, ab (the lowest id left) joins; already above the target, nothing is dropped.
    assert choose_rows(tokenizer, counts={7: 2}, rows=8, fill_to=8).keep == list(range(8))
    assert choose_rows(tokenizer, counts={7: 2}, rows=8, fill_to=3).keep == [0, 1, 2, 3, 4, 6, 7]


# --------------------------------------------------------------------------- tokenization and logits


def test_identical_ids_and_logits_on_texts_whose_pieces_are_kept(trained, pruned, clinc_slice):
    from shrink.runtime import open_classifier

    full, small = _tok(trained), _tok(pruned)
    remap = {old: new for new, old in enumerate(_kept(pruned))}
    splits = _splits(clinc_slice)
    encs = full.encode_batch(splits["test"] + splits["validation"])
    texts = [t for t, e in zip(splits["test"] + splits["validation"], encs, strict=True) if set(e.ids) <= set(remap)]
    assert len(texts) > 100
    for text, enc in zip(texts, small.encode_batch(texts), strict=True):
        assert enc.ids == [remap[i] for i in full.encode(text).ids]
    before = open_classifier(trained).predict_all(texts)[1]
    after = open_classifier(pruned).predict_all(texts)[1]
    np.testing.assert_array_equal(after, before)
    # The check the step itself ran, recorded: its sample of source texts gave the same logits.
    metrics = read_meta(pruned).metrics
    assert metrics["parity_max_abs_diff"] == 0.0 and metrics["parity_examples"] > 100
    assert metrics["texts_checked"] == metrics["texts_tokenized"]


def test_position_rows_past_max_length_are_dropped_and_long_texts_still_answer(trained, pruned, clinc_slice):
    """The student truncates at max_length 32: its 128 position rows become 32, and texts past that agree."""
    from safetensors.numpy import load_file

    from shrink.runtime import open_classifier

    before = load_file(str(trained / "model.safetensors"))
    after = load_file(str(pruned / "model.safetensors"))
    (name,) = [k for k in after if k.endswith("position_embeddings.weight")]
    assert before[name].shape[0] == 128 and after[name].shape[0] == 32
    np.testing.assert_array_equal(after[name], before[name][:32])
    assert json.loads((pruned / "config.json").read_text())["max_position_embeddings"] == 32
    meta = read_meta(pruned)
    assert meta.metrics["position_rows_removed"] == 96
    assert meta.settings["position_rows"] == {"before": 128, "kept": 32}
    # Texts the tokenizer cuts at 32 pieces (train texts: every piece kept) give the parent's logits.
    train = _splits(clinc_slice)["train"]
    long = [" ".join(train[i : i + 8]) for i in range(0, 80, 8)]
    assert min(len(_tok(pruned).encode(t).ids) for t in long) > 32
    after, before = open_classifier(pruned).predict_all(long)[1], open_classifier(trained).predict_all(long)[1]
    np.testing.assert_array_equal(after, before)


def test_trim_positions_off_keeps_every_row(tmp_path, trained, clinc_slice):
    from safetensors.numpy import load_file

    meta = prune_vocabulary(trained, clinc_slice, tmp_path / "p", replace(DOMAIN_ONLY, trim_positions=False))
    weights = load_file(str(tmp_path / "p" / "model.safetensors"))
    (rows,) = {v.shape[0] for k, v in weights.items() if k.endswith("position_embeddings.weight")}
    assert rows == 128 and meta.metrics["position_rows_removed"] == 0


def test_runtime_refuses_a_max_length_past_the_position_rows(pruned):
    from shrink.runtime import open_classifier

    assert open_classifier(pruned).max_length == 32
    with pytest.raises(ShrinkError, match=r"config.json: max_length 33 exceeds the model's 32 position embeddings"):
        open_classifier(pruned, max_length=33)


def test_both_runtime_tokenizer_paths_give_the_same_ids(pruned, clinc_slice):
    """ONNX models tokenize from tokenizer.json, PyTorch ones through the HF tokenizer: the pruned files agree."""
    from shrink.models import load_tokenizer
    from shrink.runtime import _tokenizer_from_files

    names = ["input_ids", "attention_mask", "token_type_ids"]
    rust, fields = _tokenizer_from_files(pruned, 32, names)
    assert rust is not None
    hf = load_tokenizer(pruned)
    texts = _splits(clinc_slice)["test"] + ODD
    for i in range(0, len(texts), 7):
        batch = texts[i : i + 7]
        ref = hf(batch, padding=True, truncation=True, max_length=32, return_tensors="np")
        for name, enc_field in fields.items():
            got = np.asarray([getattr(e, enc_field) for e in rust.encode_batch(batch)])
            np.testing.assert_array_equal(got, ref[name])


def test_no_clinc_test_text_gets_more_unknown_pieces(trained, pruned, clinc_test_texts):
    """All 5,500 CLINC150 test texts: words outside the kept pieces fall back to smaller ones, never to [UNK]."""
    assert len(clinc_test_texts) == 5500
    before, after = unknown_counts(trained, clinc_test_texts), unknown_counts(pruned, clinc_test_texts)
    assert (after <= before).all()
    # The test is not vacuous: most of these texts use pieces the slice's vocabulary dropped.
    full, small = _tok(trained), _tok(pruned)
    remap = {old: new for new, old in enumerate(_kept(pruned))}
    changed = sum(
        [remap.get(i, -1) for i in a.ids] != b.ids
        for a, b in zip(full.encode_batch(clinc_test_texts), small.encode_batch(clinc_test_texts), strict=True)
    )
    assert changed > 2000


def test_unknown_words_become_smaller_pieces(trained, pruned):
    full, small = _tok(trained), _tok(pruned)
    word = "xylophone"
    assert word not in small.get_vocab()
    pieces = small.encode(word, add_special_tokens=False).tokens
    assert len(pieces) > len(full.encode(word, add_special_tokens=False).tokens) and "[UNK]" not in pieces
    assert "".join(p.removeprefix("##") for p in pieces) == word


def test_vocab_txt_and_tokenizer_config_ids_are_renumbered_alike(tmp_path, trained, clinc_slice):
    from tokenizers.implementations import BertWordPieceTokenizer

    src = tmp_path / "with-vocab-txt"
    shutil.copytree(trained, src)
    vocab = _tok(trained).get_vocab()
    (src / VOCAB_TXT).write_text("".join(f"{p}\n" for p, _ in sorted(vocab.items(), key=lambda kv: kv[1])))
    config = json.loads((src / "tokenizer_config.json").read_text())
    config["added_tokens_decoder"] = {"0": {"content": "[PAD]", "special": True}, "103": {"content": "[MASK]"}}
    (src / "tokenizer_config.json").write_text(json.dumps(config))
    reseal(src, read_meta(src, verify=False))
    out = tmp_path / "pruned"
    prune_vocabulary(src, clinc_slice, out, DOMAIN_ONLY)
    lines = (out / VOCAB_TXT).read_text().splitlines()
    assert {p: i for i, p in enumerate(lines)} == _tok(out).get_vocab()
    slow = BertWordPieceTokenizer(str(out / VOCAB_TXT), lowercase=True)
    texts = _splits(clinc_slice)["test"][:50] + ODD
    assert [e.ids for e in slow.encode_batch(texts)] == [e.ids for e in _tok(out).encode_batch(texts)]
    decoder = json.loads((out / "tokenizer_config.json").read_text())["added_tokens_decoder"]
    assert decoder == {"0": {"content": "[PAD]", "special": True}, "4": {"content": "[MASK]"}}


def test_transfer_set_is_made_again_from_the_students_settings(tmp_path, trained, clinc_slice):
    from shrink.augment import augment_texts
    from shrink.config import AugmentConfig

    src = tmp_path / "distilled"
    shutil.copytree(trained, src)
    meta = read_meta(src)
    augment = {"copies": 2, "mask_prob": 0.1, "replace_prob": 0.3, "ngram_prob": 0.5, "max_ngram": 3, "seed": 7}
    reseal(src, replace(meta, settings={**meta.settings, "augment": augment}))
    out = tmp_path / "pruned"
    pruned_meta = prune_vocabulary(src, clinc_slice, out, DOMAIN_ONLY)
    train = _splits(clinc_slice)["train"]
    assert pruned_meta.settings["texts"]["transfer"] == 2 * len(train)
    assert pruned_meta.settings["transfer_augment"] == augment
    transfer = augment_texts(train, AugmentConfig(**augment), "[MASK]")
    pieces = {p for e in _tok(trained).encode_batch(transfer) for p in e.tokens}
    assert "[MASK]" in pieces and pieces <= set(_tok(out).get_vocab())


# --------------------------------------------------------------------------- downstream


def test_export_optimize_and_int8_take_the_pruned_model(tmp_path, pruned, exported, test_texts):
    import onnx

    from shrink.onnx_export import export_onnx, optimize_onnx
    from shrink.quantize import quantize_ort_dynamic
    from shrink.runtime import open_classifier

    cfg = QuantizeConfig()
    onnx_meta = export_onnx(pruned, tmp_path / "onnx", cfg, test_texts)
    assert onnx_meta.metrics["parity_agreement"] == 1.0
    rows = read_meta(pruned).metrics["rows_after"]
    init = {tuple(t.dims) for t in onnx.load(str(tmp_path / "onnx" / "model.onnx")).graph.initializer}
    assert (rows, 64) in init and (30522, 64) not in init
    # The tiny model is mostly embeddings: pruning them leaves well under half of the unpruned export.
    assert (tmp_path / "onnx" / "model.onnx").stat().st_size < 0.5 * (exported / "model.onnx").stat().st_size
    optimize_onnx(tmp_path / "onnx", tmp_path / "opt", cfg)
    int8 = quantize_ort_dynamic(tmp_path / "opt", tmp_path / "int8", cfg)
    assert int8.metrics["agreement_with_fp32"] >= 0.95
    assert _tok(tmp_path / "int8").get_vocab_size() == rows
    pred_torch = open_classifier(pruned).predict_all(test_texts)[0]
    pred_int8 = open_classifier(tmp_path / "int8").predict_all(test_texts)[0]
    assert (pred_torch == pred_int8).mean() >= 0.95


# --------------------------------------------------------------------------- the component and bad input


def test_component_writes_the_pruned_student(tmp_path, trained, clinc_slice):
    source, dataset = Model(uri=str(trained)), Dataset(uri=str(clinc_slice))
    out, metrics = Model(uri=str(tmp_path / "out")), Metrics(uri=str(tmp_path / "metrics"))
    prune_component.python_func(model=source, dataset=dataset, vocabulary={"min_count": 1}, out=out, metrics=metrics)
    meta = read_meta(out.path)
    assert meta.technique == "prune-vocabulary" and meta.parent["uri"] == source.uri
    assert out.metadata["content_hash"] == meta.content_hash() and out.metadata["format"] == "pytorch"
    # The default keep_fraction (0.4): 60% of the rows go.
    assert metrics.metadata["rows_removed"] == meta.metrics["rows_removed"] == 30522 - math.ceil(0.4 * 30522)
    assert json.loads((tmp_path / "metrics").read_text())["removed_fraction"] == pytest.approx(0.6, abs=1e-4)


def test_disabled_passes_the_student_unchanged(tmp_path, trained, clinc_slice):
    meta = prune_vocabulary(trained, clinc_slice, tmp_path / "off", VocabularyConfig(enabled=False))
    assert meta.content_hash() == read_meta(trained).content_hash()


def _empty_validation(src, out):
    """The slice with its validation split emptied (prepare_data refuses one; a hand-made dataset may have it)."""
    from shrink.data import INFO_FILE, load_prepared

    dd, _ = load_prepared(src)
    dd["validation"] = dd["validation"].select([])
    dd.save_to_disk(str(out), num_shards=dict.fromkeys(dd, 1))  # an empty split needs its one (empty) shard
    shutil.copy2(src / INFO_FILE, out / INFO_FILE)
    return out


def test_a_source_with_no_texts_is_one_line_naming_the_key(tmp_path, trained, clinc_slice, capsys):
    empty = _empty_validation(clinc_slice, tmp_path / "empty-validation")
    with pytest.raises(ShrinkError, match=r"^vocabulary\.sources: the validation split of .* has no texts"):
        prune_vocabulary(trained, empty, tmp_path / "lib", DOMAIN_ONLY)
    out, metrics = Model(uri=str(tmp_path / "out")), Metrics(uri=str(tmp_path / "metrics"))
    with pytest.raises(SystemExit) as exc:
        prune_component.python_func(
            model=Model(uri=str(trained)), dataset=Dataset(uri=str(empty)), vocabulary={}, out=out, metrics=metrics
        )
    assert exc.value.code != 0
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: vocabulary.sources: the validation split")
    assert "Traceback" not in err
    # Without validation among the sources, the same data is fine.
    meta = prune_vocabulary(trained, empty, tmp_path / "train-only", replace(DOMAIN_ONLY, sources=["train"]))
    assert meta.settings["texts"] == {"train": len(_splits(clinc_slice)["train"])}


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"sources": ["train", "test"]}, r"vocabulary\.sources: the test texts must not choose the vocabulary"),
        ({"sources": ["train", "trian"]}, r"vocabulary\.sources: 'trian' is not one of train, validation, transfer"),
        ({"sources": []}, r"vocabulary\.sources: name at least one of"),
        ({"sources": ["train", "train"]}, r"vocabulary\.sources: \['train', 'train'\] repeats a source"),
        ({"min_count": 0}, r"vocabulary\.min_count: must be >= 1"),
        ({"keep_fraction": 0}, r"vocabulary\.keep_fraction: must be in \(0, 1\]"),
        ({"keep_fraction": 1.5}, r"vocabulary\.keep_fraction: must be in \(0, 1\]"),
        ({"min_cout": 2}, r"vocabulary: unknown key 'min_cout'"),
    ],
)
def test_config_errors_name_the_key(section, message):
    with pytest.raises(ShrinkError, match=message):
        from_dict(VocabularyConfig, section, "vocabulary")


def test_pipeline_config_has_the_section(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: x\nmodel_name: m\ndata: {source: d}\nvocabulary: {sources: [test]}\n")
    with pytest.raises(ShrinkError, match=r"p\.yaml\.vocabulary\.sources: the test texts"):
        load_pipeline_config(path)
    assert from_dict(PipelineConfig, {"name": "x", "model_name": "m", "data": {"source": "d"}}).vocabulary.enabled


def test_refuses_models_it_cannot_prune(tmp_path, exported, clinc_slice):
    with pytest.raises(ShrinkError, match="vocabulary pruning needs the plain PyTorch FP32 student"):
        prune_vocabulary(exported, clinc_slice, tmp_path / "x", VocabularyConfig())
    bpe = {"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}
    with pytest.raises(ShrinkError, match="needs a WordPiece tokenizer"):
        choose_rows(bpe, counts={}, rows=1)
