"""Vocabulary pruning of one student: rows removed, and accuracy and size before and after, on a full test split.

Not CI (for ``make bench``): the given PyTorch FP32 student is pruned with the library call the
``prune_vocabulary`` component makes; then the student and the pruned one each go down the
pipeline's fastest path (ONNX export -> ORT graph optimization -> ORT dynamic INT8) and every
model is run through ``shrink.runtime.open_classifier`` on the whole test split. Also counted on
the test texts (which never choose the vocabulary): ``[UNK]`` pieces under each tokenizer, and
how many texts tokenize differently (a piece they use was dropped, so they fall back to smaller ones).
Accuracy is given for the argmax and with the config's out-of-scope rule fitted on the validation
split (``shrink.calibration.calibrate``, each model its own), which is how the benchmark step, and so
the gate, sees every candidate.

    .venv/bin/python bench/vocab.py --model STUDENT --dataset DATASET [--out results/vocab]
        [--config pipelines/configs/clinc150.yaml] [--min-count N] [--keep-fraction F|none]

Results go to ``<out>/vocab-bench.json`` and ``<out>/vocab-bench.md``; built models are reused
from ``<out>/variants`` when there.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MB = 1024 * 1024  # MiB, as the benchmark reports sizes


def build(target: Path, make) -> Path:
    """``make(target)`` unless a sealed artifact is already there."""
    if not (target / "shrink.json").is_file():
        started = time.monotonic()
        make(target)
        print(f"built {target.name} in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
    return target


def fastest_path(model: Path, out: Path, cfg, parity: list[str]) -> dict[str, Path]:
    """Export -> optimize -> ORT dynamic INT8, as pipelines/compression.py chains them; name -> artifact."""
    from shrink.onnx_export import export_onnx, optimize_onnx
    from shrink.quantize import quantize_ort_dynamic

    onnx = build(out / "onnx-fp32", lambda o: export_onnx(model, o, cfg, parity))
    opt = build(out / "onnx-optimized", lambda o: optimize_onnx(onnx, o, cfg))
    int8 = build(out / "ort-int8-dynamic", lambda o: quantize_ort_dynamic(opt, o, cfg))
    return {"pytorch-fp32": model, "onnx-fp32": onnx, "ort-int8-dynamic": int8}


def embedding_mb(directory: Path, rows: int) -> float:
    """MB of the weights shaped like the word embeddings ([rows, hidden]; INT8 scales excluded)."""
    import onnx
    from safetensors import safe_open

    from shrink.artifact import model_files, read_meta

    meta = read_meta(directory)
    total = 0
    for rel in model_files(directory, meta):
        if rel.endswith(".safetensors"):
            with safe_open(str(directory / rel), framework="np") as fh:
                for key in fh.keys():  # noqa: SIM118 - safe_open has no __iter__
                    t = fh.get_slice(key)
                    shape = t.get_shape()
                    if len(shape) == 2 and shape[0] == rows:
                        total += fh.get_tensor(key).nbytes
        elif rel.endswith(".onnx"):
            for t in onnx.load(str(directory / rel)).graph.initializer:
                if len(t.dims) == 2 and t.dims[0] == rows:
                    total += len(t.raw_data) or onnx.numpy_helper.to_array(t).nbytes
    return total / MB


def evaluate(directory: Path, calibrated: Path | None, texts: list[str], labels, rows: int, oos: int | None) -> dict:
    """MB, and accuracy figures of the raw argmax and (``calibrated``: the copy with its oos rule) with the rule."""
    import numpy as np

    from shrink.artifact import model_files, read_meta
    from shrink.oos import figures
    from shrink.runtime import open_classifier

    meta = read_meta(directory)
    pred, logits = open_classifier(calibrated or directory).predict_all(texts, batch_size=64)
    raw = logits.argmax(-1)

    def figs(p):
        if oos is None:
            return {"accuracy": float(np.mean(p == labels))}
        return figures(labels, p, oos)

    return {
        "technique": meta.technique,
        "format": meta.format,
        "precision": meta.precision,
        "size_mb": sum(model_files(directory, meta).values()) / MB,
        "embedding_mb": embedding_mb(directory, rows),
        "raw": figs(raw),
        "rule": figs(pred) if calibrated else None,
        "pred": pred,
    }


def tokenization(student: Path, pruned: Path, texts: list[str]) -> dict:
    """[UNK] pieces per tokenizer, and test texts whose ids change (mapped through the kept rows)."""
    import numpy as np

    from shrink import files
    from shrink.vocab import MAP_FILE, TOKENIZER_FILE, encode_all, unknown_counts, whole_text_tokenizer

    unk_full, unk_pruned = unknown_counts(student, texts), unknown_counts(pruned, texts)
    remap = {old: new for new, old in enumerate(files.read_json(pruned / MAP_FILE)["kept_ids"])}
    full, after = (
        encode_all(whole_text_tokenizer(files.read_json(d / TOKENIZER_FILE)), texts) for d in (student, pruned)
    )
    changed = sum(1 for a, b in zip(full, after, strict=True) if [remap.get(i, -1) for i in a] != b)
    return {
        "texts": len(texts),
        "unk_full": int(unk_full.sum()),
        "unk_pruned": int(unk_pruned.sum()),
        "texts_with_more_unk": int((unk_pruned > unk_full).sum()),
        "texts_tokenized_differently": changed,
        "pieces_per_text_full": float(np.mean([len(a) for a in full])),
        "pieces_per_text_pruned": float(np.mean([len(b) for b in after])),
    }


def main(argv: list[str] | None = None) -> int:
    """Prune, build both fastest paths, evaluate on the test split, write JSON and a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="a PyTorch FP32 student artifact")
    parser.add_argument("--dataset", required=True, type=Path, help="the prepared dataset it was trained on")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "vocab")
    parser.add_argument("--config", type=Path, default=ROOT / "pipelines" / "configs" / "clinc150.yaml")
    parser.add_argument("--min-count", type=int, default=None, help="override vocabulary.min_count")
    parser.add_argument("--keep-fraction", default=None, help="override vocabulary.keep_fraction (a number, or 'none')")
    args = parser.parse_args(argv)

    import numpy as np

    from shrink.config import OosConfig, QuantizeConfig, VocabularyConfig, from_dict, load_yaml, to_dict
    from shrink.data import OOS_LABEL, load_prepared
    from shrink.errors import ShrinkError
    from shrink.logs import setup_logging
    from shrink.metrics import paired_difference
    from shrink.onnx_export import parity_texts
    from shrink.vocab import prune_vocabulary

    setup_logging()
    try:
        has_config = args.config.is_file()
        qcfg = load_yaml(QuantizeConfig, args.config, section="quantize") if has_config else QuantizeConfig()
        vcfg = load_yaml(VocabularyConfig, args.config, section="vocabulary") if has_config else VocabularyConfig()
        overrides = {} if args.min_count is None else {"min_count": args.min_count}
        if args.keep_fraction is not None:
            try:
                overrides["keep_fraction"] = None if args.keep_fraction == "none" else float(args.keep_fraction)
            except ValueError:
                raise ShrinkError(f"--keep-fraction: {args.keep_fraction!r} is not a number or 'none'") from None
        vcfg = from_dict(VocabularyConfig, {**to_dict(vcfg), **overrides, "enabled": True}, "options")
        variants = args.out / "variants" / f"min-count-{vcfg.min_count}-keep-{vcfg.keep_fraction}"
        pruned = build(variants / "pruned", lambda o: prune_vocabulary(args.model, args.dataset, o, vcfg))
        dd, info = load_prepared(args.dataset)
        oos = info.label_names.index(OOS_LABEL) if info.has_oos else None
        texts, labels = list(dd["test"]["text"]), np.asarray(dd["test"]["label"])
        parity = parity_texts(args.dataset, qcfg.parity_samples)
        paths = {
            "unpruned": fastest_path(args.model, args.out / "variants" / "unpruned", qcfg, parity),
            "pruned": fastest_path(pruned, variants, qcfg, parity),
        }
        from shrink.artifact import read_meta
        from shrink.calibration import calibrate

        meta = read_meta(pruned)
        rows_before, rows_after = meta.metrics["rows_before"], meta.metrics["rows_after"]
        ocfg = load_yaml(OosConfig, args.config, section="oos") if has_config else OosConfig()
        rule_on = ocfg.active(info.label_names, "oos")

        def with_rule(directory: Path, name: str) -> Path | None:
            """A copy with the oos rule fitted on validation, as the benchmark step makes one (None: rule off)."""
            return (
                build(
                    args.out / "variants" / "calibrated" / name, lambda o: calibrate(directory, args.dataset, o, ocfg)
                )
                if rule_on
                else None
            )

        table = {}
        for form in ("pytorch-fp32", "onnx-fp32", "ort-int8-dynamic"):
            row = {}
            for side, rows in (("unpruned", rows_before), ("pruned", rows_after)):
                directory = paths[side][form]
                tag = "unpruned" if side == "unpruned" else variants.name
                row[side] = evaluate(directory, with_rule(directory, f"{tag}-{form}"), texts, labels, rows, oos)
            b, a = row["unpruned"], row["pruned"]
            before_pred, after_pred = b.pop("pred"), a.pop("pred")
            row["agreement"] = float((before_pred == after_pred).mean())
            # Is the change a difference at all, or the luck of a dozen texts? (rule applied when on)
            row["paired"] = paired_difference(labels, after_pred, before_pred)
            row["change_points"] = {
                k: 100 * (a[k]["accuracy"] - b[k]["accuracy"]) for k in ("raw", "rule") if b[k] is not None
            }
            table[form] = row
            print(json.dumps({form: table[form]}), flush=True)
        tok = tokenization(args.model, pruned, texts)
    except ShrinkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    result = {
        "model": str(args.model),
        "dataset": str(args.dataset),
        "vocabulary": to_dict(vcfg),
        "rows_before": rows_before,
        "rows_after": rows_after,
        "removed_fraction": 1 - rows_after / rows_before,
        "rows": meta.settings["rows"],
        "source_texts": meta.settings["texts"],
        "test_tokenization": tok,
        "forms": table,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vocab-bench.json").write_text(json.dumps(result, indent=2))
    sources = ", ".join(f"{k} {v}" for k, v in meta.settings["texts"].items())
    lines = [
        f"Rows: {rows_before} -> {rows_after} ({100 * result['removed_fraction']:.1f}% removed; "
        f"min_count {vcfg.min_count}, keep_fraction {vcfg.keep_fraction}; sources {sources})",
        f"Test texts: {tok['texts']}; [UNK] pieces {tok['unk_full']} -> {tok['unk_pruned']} "
        f"({tok['texts_with_more_unk']} texts with more); tokenized differently: {tok['texts_tokenized_differently']}; "
        f"pieces per text {tok['pieces_per_text_full']:.2f} -> {tok['pieces_per_text_pruned']:.2f}",
        "",
        "Accuracy (points of change): the argmax (raw) and with the oos rule fitted on validation, as the benchmark "
        "judges every candidate. Agreement: predictions equal to the unpruned model's (rule applied when on). "
        "Paired: test texts only the pruned model gets right / only the unpruned one does, and the exact McNemar "
        "p-value of that split (below 0.05: the accuracies differ).",
        "",
        "| form | MB before | after | embeddings MB before | after | raw accuracy before | after | change "
        "| with rule before | after | change | oos recall before | after | in-scope before | after | agreement "
        "| paired |",
        "|" + "---|" * 17,
    ]

    def pct(figs, key):
        return "-" if not figs or figs.get(key) is None else f"{100 * figs[key]:.2f}"

    for form, r in table.items():
        b, a, ch = r["unpruned"], r["pruned"], r["change_points"]
        shown_b, shown_a = b["rule"] or b["raw"], a["rule"] or a["raw"]
        lines.append(
            f"| {form} | {b['size_mb']:.2f} | {a['size_mb']:.2f} | {b['embedding_mb']:.2f} | {a['embedding_mb']:.2f} "
            f"| {pct(b['raw'], 'accuracy')} | {pct(a['raw'], 'accuracy')} | {ch['raw']:+.2f} "
            f"| {pct(b['rule'], 'accuracy')} | {pct(a['rule'], 'accuracy')} | "
            + (f"{ch['rule']:+.2f}" if "rule" in ch else "-")
            + f" | {pct(shown_b, 'oos_recall')} | {pct(shown_a, 'oos_recall')} "
            f"| {pct(shown_b, 'in_scope_accuracy')} | {pct(shown_a, 'in_scope_accuracy')} "
            f"| {100 * r['agreement']:.2f} "
            f"| {r['paired']['a_only']} / {r['paired']['b_only']}, p = {r['paired']['p_value']:.2f} |"
        )
    (args.out / "vocab-bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
