"""Vocabulary pruning: keep the word pieces the domain uses, and only their embedding rows.

Why: in a small student the word-embedding matrix is most of the model. MiniLM's 30,522 rows
of 384 are 11.2 of the 17.4 MB of the INT8 student, yet CLINC150's training and validation
texts use 5,944 pieces. A row the tokenizer never produces costs disk, download and memory
and buys nothing, so it goes, before ONNX export, so every later step works on the small model.

What is kept, in the original order (ids are renumbered but keep their order, so ``[PAD]``
stays 0 and every id that config and tokenizer name is remapped the same way):

- the added (special) tokens, the unknown token and every id ``config.json`` names;
- every piece that tokenizing the sources produces at least ``min_count`` times: the training
  and validation texts and the transfer set the student was distilled on (made again from the
  settings it records; with BERT's pre-tokenizer it adds only ``[MASK]``, as its words are the
  training texts' own), never the test texts;
- every single-character piece and its ``##`` form, and any piece holding a character that
  lacks one of them (none in BERT's vocabularies): a word outside the kept set still
  tokenizes, into smaller pieces, never into ``[UNK]`` where the full vocabulary had none;
- then, up to ``keep_fraction`` of the rows, the base vocabulary's commonest other pieces: its
  lowest ids, as a WordPiece vocabulary is written in the order its pieces were learnt, commonest
  first (BERT's: "the", "of", "and", ...). Why: in-scope accuracy does not need them (CLINC150:
  -0.1 point without them), but out-of-scope queries are recognised by words the training
  texts lack, and spelt in smaller pieces they look in scope (docs/vocabulary.md has the curve).

The position-embedding rows past the student's ``max_length`` go too (:func:`trim_positions`):
the runtime truncates there, so no text reaches them.

Why a text whose pieces are all kept tokenizes exactly as before: WordPiece takes, at each
position, the longest piece in the vocabulary; the pruned one is a subset of the full one
that still holds the piece the full one took, so the longest match is that same piece. Such
texts get the same rows and so the same logits; every run checks both on its source texts.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shrink.artifact import ArtifactMeta, model_files, read_meta, write_artifact
from shrink.config import AugmentConfig, VocabularyConfig, from_dict, save_yaml, to_dict
from shrink.errors import ShrinkError
from shrink.logs import log

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
VOCAB_TXT = "vocab.txt"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
MAP_FILE = "vocabulary.json"  # the original id of every kept row, in the new order
CONFIG_FILE = "vocabulary.yaml"
# Config ids that name tokens: kept, and remapped in the pruned config.
CONFIG_TOKEN_IDS = (
    "pad_token_id",
    "unk_token_id",
    "cls_token_id",
    "sep_token_id",
    "mask_token_id",
    "bos_token_id",
    "eos_token_id",
    "decoder_start_token_id",
)
MB = 1024 * 1024  # MiB, the benchmark's unit (shrink/benchmark.py), so the figures compare with its size_mb
PARITY_TEXTS = 256  # source texts run through the parent and the pruned model: same logits or the step fails

__all__ = [
    "VocabularyChoice",
    "choose_rows",
    "encode_all",
    "piece_counts",
    "prune_tokenizer_json",
    "prune_vocabulary",
    "trim_positions",
    "unknown_counts",
    "whole_text_tokenizer",
]


# --------------------------------------------------------------------------- which texts


def source_texts(cfg: VocabularyConfig, dataset_dir: str | Path, meta: ArtifactMeta, mask_token: str, where: str):
    """The texts of each configured source, by name (``transfer`` is empty when the student had none).

    The transfer set is made again by :func:`shrink.augment.augment_texts` from the settings the
    student records (``settings.augment``, written by distillation): the very texts it trained on.
    """
    from shrink.augment import augment_texts
    from shrink.data import load_prepared
    from shrink.models import user_data_name

    dd, _ = load_prepared(dataset_dir)
    texts: dict[str, list[str]] = {}
    for source in cfg.sources:
        if source == "transfer":
            recorded = meta.settings.get("augment")
            augment = from_dict(AugmentConfig, recorded, f"{where} settings.augment") if recorded else None
            if augment is None or augment.copies == 0:
                log.info("vocabulary: the student was distilled without a transfer set; nothing to cover there")
                texts[source] = []
                continue
            texts[source] = augment_texts(list(dd["train"]["text"]), augment, mask_token)
            continue
        texts[source] = list(dd[source]["text"])
        if not texts[source]:
            raise ShrinkError(
                f"vocabulary.sources: the {source} split of {user_data_name(f'dataset {dataset_dir}')} has no texts "
                "to choose the vocabulary from; give it texts or remove the source"
            )
    return texts


def whole_text_tokenizer(tokenizer_json: dict[str, Any]):
    """The Rust tokenizer of a tokenizers JSON, without truncation or padding: every piece of every text.

    No truncation: a piece past ``max_length`` is cut at run time, so keeping it costs one row
    and never changes an answer, while dropping it would make the rule "every source piece is
    kept" depend on a run-time setting.
    """
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(json.dumps(tokenizer_json))
    tok.no_truncation()
    tok.no_padding()
    return tok


def encode_all(tok, texts: list[str], special: bool = False) -> list[list[int]]:
    """The ids of every text, in batches (special tokens only when asked for)."""
    batches = (tok.encode_batch(texts[i : i + 2048], add_special_tokens=special) for i in range(0, len(texts), 2048))
    return [e.ids for batch in batches for e in batch]


def piece_counts(tokenizer_json: dict[str, Any], texts: list[str]) -> Counter:
    """How often each piece id occurs when the texts are tokenized whole (no special tokens)."""
    counts: Counter = Counter()
    for ids in encode_all(whole_text_tokenizer(tokenizer_json), texts):
        counts.update(ids)
    return counts


# --------------------------------------------------------------------------- which rows


@dataclass
class VocabularyChoice:
    """The rows to keep: original ids in ascending order (the new id of ``keep[i]`` is ``i``)."""

    keep: list[int]
    rows_before: int
    # How many kept rows each rule asks for (a row may be asked for by several rules).
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def remap(self) -> dict[int, int]:
        """Original id -> new id, for the kept rows."""
        return {old: new for new, old in enumerate(self.keep)}


def _wordpiece(tokenizer_json: dict[str, Any], where: str) -> dict[str, Any]:
    model = tokenizer_json.get("model") if isinstance(tokenizer_json, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("vocab"), dict):
        raise ShrinkError(f"{where}: not a tokenizers JSON file with a model vocabulary")
    if model.get("type") != "WordPiece":
        raise ShrinkError(
            f"{where}: vocabulary pruning needs a WordPiece tokenizer (BERT's); this one is {model.get('type')}"
        )
    return model


def choose_rows(
    tokenizer_json: dict[str, Any],
    counts: Counter,
    rows: int,
    min_count: int = 1,
    pinned: set[int] | None = None,
    where: str = TOKENIZER_FILE,
    fill_to: int | None = None,
) -> VocabularyChoice:
    """Which of the model's ``rows`` embedding rows to keep (see the module docstring for the rules).

    ``counts`` are the source texts' piece counts (:func:`piece_counts`); ``pinned`` ids
    (those ``config.json`` names) are kept whatever they are; ``fill_to`` rows are kept in all
    when the rules ask for fewer, the lowest other ids first (never a bracketed placeholder such
    as ``[unused5]``, which no text produces).
    """
    model = _wordpiece(tokenizer_json, where)
    vocab: dict[str, int] = model["vocab"]
    prefix = model.get("continuing_subword_prefix") or "##"
    special = {int(t["id"]) for t in tokenizer_json.get("added_tokens") or []}
    if model.get("unk_token") in vocab:
        special.add(vocab[model["unk_token"]])
    special |= set(pinned or ())
    # A character can be spelled when it has both a word-initial and a continuing piece.
    spellable = {p for p in vocab if len(p) == 1 and prefix + p in vocab}
    characters, unspellable = set(), set()
    for piece, i in vocab.items():
        body = piece[len(prefix) :] if piece.startswith(prefix) and len(piece) > len(prefix) else piece
        if len(body) == 1 and body in spellable:
            characters.add(i)
        elif any(c not in spellable for c in body) and i not in special:
            unspellable.add(i)
    used = {i for i, n in counts.items() if n >= min_count}
    keep = sorted(i for i in special | characters | unspellable | used if 0 <= i < rows)
    frequent: list[int] = []
    if fill_to is not None and fill_to > len(keep):
        chosen = set(keep)
        placeholder = {i for p, i in vocab.items() if len(p) > 2 and p.startswith("[") and p.endswith("]")}
        spare = (i for i in sorted(vocab.values()) if i < rows and i not in chosen and i not in placeholder)
        frequent = [i for _, i in zip(range(fill_to - len(keep)), spare, strict=False)]
        keep = sorted(chosen | set(frequent))
    missing = sorted(i for i in special if not 0 <= i < rows)
    if missing:
        raise ShrinkError(f"{where}: token ids {missing[:5]} lie beyond the model's {rows} embedding rows")
    reasons = {
        "special": len(special),
        "characters": len(characters),
        "unspellable": len(unspellable),
        "used": len(used),
        "below_min_count": sum(1 for n in counts.values() if n < min_count),
        "frequent": len(frequent),
    }
    return VocabularyChoice(keep=keep, rows_before=rows, reasons=reasons)


# --------------------------------------------------------------------------- the tokenizer


def _remap_processor(processor: Any, remap: dict[int, int], where: str) -> Any:
    """A tokenizers post-processor with its special-token ids renumbered (template, BERT, RoBERTa, sequences)."""
    if processor is None:
        return None
    kind = processor.get("type")
    new = copy.deepcopy(processor)
    if kind == "TemplateProcessing":
        for token in new.get("special_tokens", {}).values():
            token["ids"] = [remap[i] for i in token["ids"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            content, old = new[key]
            new[key] = [content, remap[old]]
    elif kind == "Sequence":
        new["processors"] = [_remap_processor(p, remap, where) for p in new.get("processors", [])]
    elif kind != "ByteLevel":  # ByteLevel holds no ids
        raise ShrinkError(f"{where}: post-processor {kind} is not one vocabulary pruning knows how to renumber")
    return new


def prune_tokenizer_json(tokenizer_json: dict[str, Any], keep: list[int], where: str = TOKENIZER_FILE):
    """The tokenizers JSON for the kept rows: vocabulary, added tokens, post-processor and padding renumbered.

    Every id in the file goes through the same old -> new map, so the WordPiece model, the
    added tokens (``[CLS]`` ...), the template that inserts them and the padding agree.
    """
    model = _wordpiece(tokenizer_json, where)
    remap = {old: new for new, old in enumerate(keep)}
    new = copy.deepcopy(tokenizer_json)
    kept = {piece: remap[i] for piece, i in model["vocab"].items() if i in remap}
    new["model"]["vocab"] = dict(sorted(kept.items(), key=lambda kv: kv[1]))
    try:
        for token in new.get("added_tokens") or []:
            token["id"] = remap[int(token["id"])]
        new["post_processor"] = _remap_processor(tokenizer_json.get("post_processor"), remap, where)
        if new.get("padding"):
            new["padding"]["pad_id"] = remap[int(new["padding"]["pad_id"])]
    except KeyError as exc:
        raise ShrinkError(f"{where}: names token id {exc.args[0]}, which is not kept") from None
    return new


def _pieces_in_order(tokenizer_json: dict[str, Any], size: int) -> list[str]:
    """Every token of a pruned tokenizer by id, for ``vocab.txt`` (added tokens included)."""
    by_id = {i: p for p, i in tokenizer_json["model"]["vocab"].items()}
    by_id |= {int(t["id"]): t["content"] for t in tokenizer_json.get("added_tokens") or []}
    return [by_id.get(i, f"[unused-row-{i}]") for i in range(size)]


def _write_tokenizer(src: Path, out: Path, pruned: dict[str, Any], remap: dict[int, int], size: int) -> list[str]:
    """Write the pruned tokenizer files beside the model; returns the names written.

    ``tokenizer.json`` is what the fast tokenizer and the runtime read; ``vocab.txt`` (one
    token a line, by id) is rewritten when the parent had one, so a slow tokenizer built from
    it agrees; ``tokenizer_config.json``'s ``added_tokens_decoder`` is keyed by id and is
    renumbered; ``special_tokens_map.json`` names tokens, not ids, and is copied.
    """
    from shrink import files

    written = [TOKENIZER_FILE]
    files.write_text(out / TOKENIZER_FILE, json.dumps(pruned, ensure_ascii=False, indent=2))
    if (src / VOCAB_TXT).is_file():
        files.write_text(out / VOCAB_TXT, "".join(f"{p}\n" for p in _pieces_in_order(pruned, size)))
        written.append(VOCAB_TXT)
    if (src / TOKENIZER_CONFIG).is_file():
        config = files.read_json(src / TOKENIZER_CONFIG)
        decoder = config.get("added_tokens_decoder") if isinstance(config, dict) else None
        if isinstance(decoder, dict):
            try:
                config["added_tokens_decoder"] = {str(remap[int(k)]): v for k, v in decoder.items()}
            except KeyError as exc:
                where = src / TOKENIZER_CONFIG
                raise ShrinkError(f"{where}: names token id {exc.args[0]}, which is not kept") from None
        files.write_text(out / TOKENIZER_CONFIG, json.dumps(config, ensure_ascii=False, indent=2))
        written.append(TOKENIZER_CONFIG)
    if (src / SPECIAL_TOKENS_MAP).is_file():
        shutil.copy2(src / SPECIAL_TOKENS_MAP, out / SPECIAL_TOKENS_MAP)
        written.append(SPECIAL_TOKENS_MAP)
    return written


# --------------------------------------------------------------------------- the model


def prune_embeddings(model, keep: list[int], where: str) -> None:
    """Keep only rows ``keep`` of the input embeddings (renumbered 0..n-1) and the config's token ids with them.

    Refuses a model with another vocabulary-sized weight (an LM head): its rows would have to
    be pruned alike, and a classifier has none.
    """
    import torch

    emb = model.get_input_embeddings()
    rows = emb.weight.shape[0]
    others = [n for n, p in model.named_parameters() if p is not emb.weight and rows in p.shape]
    if others:
        raise ShrinkError(f"{where}: {others[0]} is vocabulary-sized too; only the input embeddings can be pruned")
    remap = {old: new for new, old in enumerate(keep)}
    pad = remap.get(emb.padding_idx) if emb.padding_idx is not None else None
    new = torch.nn.Embedding(len(keep), emb.weight.shape[1], padding_idx=pad, dtype=emb.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(emb.weight[torch.as_tensor(keep, dtype=torch.long)])
    model.set_input_embeddings(new)
    model.config.vocab_size = len(keep)
    for key in CONFIG_TOKEN_IDS:
        value = getattr(model.config, key, None)
        if isinstance(value, int) and not isinstance(value, bool):
            setattr(model.config, key, remap[value])


def trim_positions(model, max_length: int, where: str) -> tuple[int, int] | None:
    """Keep the first ``max_length`` rows of absolute position embeddings; (rows before, after), or None if kept.

    Why: the runtime truncates every text to ``max_length`` pieces (the student's setting), so
    the rows past it are never indexed. MiniLM has 512 for a 64-piece student: 448 rows of
    384 that the INT8 file still stores (0.17 MB). ``config.max_position_embeddings`` follows,
    so the runtime refuses a ``max_length`` the model no longer has rows for.

    Only embeddings whose position ids count from 0 (BERT, DistilBERT, ELECTRA, ...) are
    trimmed: RoBERTa-style ones offset them by ``padding_idx`` and keep every row, as do
    models without a position table (relative or rotary positions).
    """
    import torch

    base = getattr(model, model.base_model_prefix, model)
    emb = getattr(base, "embeddings", None)
    table = getattr(emb, "position_embeddings", None)
    if not isinstance(table, torch.nn.Embedding) or hasattr(emb, "padding_idx"):
        return None
    rows = table.weight.shape[0]
    if rows <= max_length:
        return None
    if getattr(model.config, "max_position_embeddings", None) != rows:
        raise ShrinkError(f"{where}: config.max_position_embeddings does not match the {rows} position rows")
    new = torch.nn.Embedding(max_length, table.weight.shape[1], dtype=table.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(table.weight[:max_length])
    emb.position_embeddings = new
    for name in ("position_ids", "token_type_ids"):  # non-persistent buffers sized by the table
        buffer = getattr(emb, name, None)
        if isinstance(buffer, torch.Tensor) and buffer.dim() == 2 and buffer.shape[1] == rows:
            setattr(emb, name, torch.nn.Buffer(buffer[:, :max_length].clone(), persistent=False))
    model.config.max_position_embeddings = max_length
    return rows, max_length


def _config_ids(model) -> set[int]:
    ids = (getattr(model.config, k, None) for k in CONFIG_TOKEN_IDS)
    return {v for v in ids if isinstance(v, int) and not isinstance(v, bool) and v >= 0}


# --------------------------------------------------------------------------- checks


def _check_tokenization(out: Path, texts: list[str], full_json: dict[str, Any], remap: dict[int, int]) -> list[str]:
    """Texts whose pieces are all kept must get the remapped ids from both tokenizer paths; returns those texts.

    Both paths are the runtime's: the Rust tokenizer read from ``tokenizer.json`` (ONNX models)
    and the Hugging Face tokenizer (PyTorch models, and every export). Special tokens are
    included, so the renumbered post-processor is checked too.
    """
    from shrink.models import load_tokenizer

    full = encode_all(whole_text_tokenizer(full_json), texts, special=True)
    covered = [(t, [remap[i] for i in ids]) for t, ids in zip(texts, full, strict=True) if all(i in remap for i in ids)]
    pruned = whole_text_tokenizer(json.loads((out / TOKENIZER_FILE).read_text(encoding="utf-8")))
    got = encode_all(pruned, [t for t, _ in covered], special=True)
    for (text, expected), ids in zip(covered, got, strict=True):
        if ids != expected:
            raise ShrinkError(f"{out / TOKENIZER_FILE}: tokenizes {text!r} differently from the full vocabulary")
    hf = load_tokenizer(out)
    for text, expected in covered[:: max(1, len(covered) // PARITY_TEXTS)]:
        if hf(text, truncation=False)["input_ids"] != expected:
            raise ShrinkError(f"{out}: the Hugging Face tokenizer gives {text!r} other ids than tokenizer.json")
    return [t for t, _ in covered]


def _check_logits(parent_dir: Path, out: Path, texts: list[str]) -> dict[str, float]:
    """Parent and pruned model on the same texts, through the runtime: their logits must agree."""
    from shrink.onnx_export import compare_logits
    from shrink.runtime import open_classifier

    _, before = open_classifier(parent_dir).predict_all(texts)
    _, after = open_classifier(out).predict_all(texts)
    result = compare_logits(before, after)
    if result["agreement"] < 1.0 or result["max_abs_diff"] > 1e-4:
        raise ShrinkError(
            f"{out}: the pruned model's logits differ from its parent's on texts whose pieces are all kept "
            f"(max |diff| {result['max_abs_diff']:.3g}, agreement {result['agreement']:.2%})"
        )
    return result


# --------------------------------------------------------------------------- the step


def prune_vocabulary(
    model_dir: str | Path,
    dataset_dir: str | Path,
    out_dir: str | Path,
    cfg: VocabularyConfig,
    parent_uri: str | None = None,
) -> ArtifactMeta:
    """Prune a PyTorch FP32 classifier's vocabulary to the pieces its domain uses; seal the result.

    The output is a PyTorch artifact (technique ``prune-vocabulary``, parent = the input) whose
    embedding matrix holds the kept rows only, with tokenizer files and config renumbered alike,
    ``vocabulary.json`` (the original id of every kept row) and ``vocabulary.yaml``. Before it is
    sealed for good, the source texts are checked to tokenize to the remapped ids and a sample of
    them to give the parent's logits. With ``cfg.enabled`` false the input is copied unchanged.
    """
    from shrink import files
    from shrink.models import load_pytorch_artifact
    from shrink.onnx_export import inherited_settings, require_classifier

    src, out = Path(model_dir), Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ShrinkError(f"{out}: output directory is not empty")
    if not cfg.enabled:
        shutil.copytree(src, out, dirs_exist_ok=True)
        log.info("vocabulary pruning is off (vocabulary.enabled: false): the student passes unchanged")
        return read_meta(out)
    require_classifier(src)
    meta = read_meta(src)
    if meta.format != "pytorch" or meta.precision != "fp32" or meta.extra.get("loader"):
        raise ShrinkError(
            f"{src}: a {meta.format} {meta.precision} artifact ({meta.technique}); vocabulary pruning needs the "
            "plain PyTorch FP32 student (it runs before export, quantization and pruning)"
        )
    if not (src / TOKENIZER_FILE).is_file():
        raise ShrinkError(f"{src / TOKENIZER_FILE}: missing; vocabulary pruning rewrites the fast tokenizer")
    full_json = files.read_json(src / TOKENIZER_FILE, "tokenizer JSON")
    _wordpiece(full_json, str(src / TOKENIZER_FILE))
    model, tokenizer, meta = load_pytorch_artifact(src)

    texts = source_texts(cfg, dataset_dir, meta, tokenizer.mask_token or "[MASK]", str(src / "shrink.json"))
    every = [t for source in texts.values() for t in source]
    counts = piece_counts(full_json, every)
    rows = model.get_input_embeddings().weight.shape[0]
    fill_to = math.ceil(cfg.keep_fraction * rows) if cfg.keep_fraction is not None else None
    choice = choose_rows(
        full_json, counts, rows, cfg.min_count, _config_ids(model), str(src / TOKENIZER_FILE), fill_to=fill_to
    )
    remap = choice.remap
    log.info(
        "vocabulary: %d of %d rows kept (%.1f%% removed): %d pieces used by %s, %d single characters, %d special, "
        "%d common pieces",
        len(choice.keep),
        rows,
        100 * (1 - len(choice.keep) / rows),
        choice.reasons["used"],
        ", ".join(f"{s} ({len(t)} texts)" for s, t in texts.items()),
        choice.reasons["characters"],
        choice.reasons["special"],
        choice.reasons["frequent"],
    )
    dim = model.get_input_embeddings().weight.shape[1]
    bytes_per = model.get_input_embeddings().weight.element_size()
    prune_embeddings(model, choice.keep, str(src))
    max_length = meta.settings.get("max_length")
    positions = trim_positions(model, int(max_length), str(src)) if cfg.trim_positions and max_length else None
    if positions:
        log.info("vocabulary: position rows %d -> %d (texts are truncated to max_length %d)", *positions, max_length)

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    pruned_json = prune_tokenizer_json(full_json, choice.keep, str(src / TOKENIZER_FILE))
    _write_tokenizer(src, out, pruned_json, remap, len(choice.keep))
    files.write_json(out / MAP_FILE, {"rows_before": rows, "kept_ids": choice.keep, "parent": meta.content_hash()})
    save_yaml(cfg, out / CONFIG_FILE)

    settings = {
        **inherited_settings(meta),
        **to_dict(cfg),
        "texts": {s: len(t) for s, t in texts.items()},
        "rows": {"before": rows, "kept": len(choice.keep), **choice.reasons},
        "transfer_augment": meta.settings.get("augment") if texts.get("transfer") else None,
        "map_file": MAP_FILE,
        "position_rows": {"before": positions[0], "kept": positions[1]} if positions else None,
    }
    common = dict(
        format="pytorch",
        precision="fp32",
        label_names=meta.label_names,
        technique="prune-vocabulary",
        settings=settings,
        parent=meta,
        parent_uri=parent_uri,
    )
    write_artifact(out, **common)  # sealed first: the checks run on exactly what ships
    covered = _check_tokenization(out, every, full_json, remap)
    # Validation texts first: the model was not trained on them, so their logits are not all saturated.
    held_out = set(texts.get("validation") or [])
    sample = sorted(covered, key=lambda t: t not in held_out)[:PARITY_TEXTS]
    parity = _check_logits(src, out, sample)
    weights_before = sum(model_files(src, meta).values())
    sealed = read_meta(out)
    weights_after = sum(model_files(out, sealed).values())
    metrics = {
        "rows_before": rows,
        "rows_after": len(choice.keep),
        "rows_removed": rows - len(choice.keep),
        "removed_fraction": 1 - len(choice.keep) / rows,
        "embedding_mb_before": rows * dim * bytes_per / MB,
        "embedding_mb_after": len(choice.keep) * dim * bytes_per / MB,
        "position_rows_removed": positions[0] - positions[1] if positions else 0,
        "size_mb_before": weights_before / MB,
        "size_mb": weights_after / MB,
        "pieces_used": choice.reasons["used"],
        "texts_tokenized": len(every),
        "texts_checked": len(covered),
        "parity_max_abs_diff": parity["max_abs_diff"],
        "parity_agreement": parity["agreement"],
        "parity_examples": parity["examples"],
    }
    log.info(
        "vocabulary: weights %.1f -> %.1f MB; %d source texts tokenize as before, logits max |diff| %.2g on %d",
        metrics["size_mb_before"],
        metrics["size_mb"],
        len(covered),
        parity["max_abs_diff"],
        parity["examples"],
    )
    return write_artifact(out, **common, metrics=metrics)


def unknown_counts(model_dir: str | Path, texts: list[str]) -> np.ndarray:
    """How many ``[UNK]`` pieces each text gets from an artifact's tokenizer (the measure of coverage)."""
    tokenizer_json = json.loads((Path(model_dir) / TOKENIZER_FILE).read_text(encoding="utf-8"))
    tok = whole_text_tokenizer(tokenizer_json)
    unk = tok.token_to_id(tokenizer_json["model"]["unk_token"])
    return np.asarray([ids.count(unk) for ids in encode_all(tok, texts)], dtype=np.int64)
