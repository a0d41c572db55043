"""The pruning steps the components call: artifacts in, a measured and sealed pruned artifact out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shrink.artifact import ArtifactMeta
from shrink.config import PruneConfig, to_dict
from shrink.errors import ShrinkError
from shrink.logs import log
from shrink.prune.schedule import make_schedule, total_steps
from shrink.prune.storage import save_pruned
from shrink.prune.structured import structured_prune_model
from shrink.prune.training import StepCallback, evaluate, load_inputs
from shrink.prune.unstructured import METHODS, prune_model
from shrink.sparse import bert_layers
from shrink.train import select_device

TECHNIQUES = {"magnitude": "prune-magnitude", "movement": "prune-movement", "structured": "prune-structured"}


def _settings(cfg: PruneConfig, method: str) -> dict[str, Any]:
    keys = ["alpha", "temperature"] + (
        ["head_fraction", "ffn_fraction", "importance_examples"]
        if method == "structured"
        else [
            "target_sparsity",
            "initial_sparsity",
            "scope",
            "include_embeddings",
            "include_classifier",
            "schedule_start",
            "schedule_steps",
            "update_every",
        ]
        + (["scores_learning_rate"] if method == "movement" else [])
    )
    return {
        "method": method,
        **{k: getattr(cfg, k) for k in keys},
        "max_length": cfg.train.max_length,
        "train": to_dict(cfg.train),
    }


def prune_unstructured(
    cfg: PruneConfig,
    method: str,
    dataset_dir: str | Path,
    teacher_dir: str | Path,
    student_dir: str | Path,
    out_dir: str | Path,
    on_step: StepCallback | None = None,
) -> ArtifactMeta:
    """Magnitude or movement pruning of a student, distilled from the teacher, sealed with compact weights."""
    if method not in METHODS:
        raise ShrinkError(f"method: {method!r} is not one of {', '.join(map(repr, METHODS))}")
    from shrink.data import load_prepared

    dd, _ = load_prepared(dataset_dir)
    make_schedule(cfg, total_steps(cfg, len(dd["train"])))  # fail before the teacher runs if it does not fit
    device = select_device(cfg.train.device)
    (model, tokenizer, student_meta), _, data = load_inputs(cfg, dataset_dir, teacher_dir, student_dir, device)
    dense = evaluate(model, data, device)
    stats = prune_model(model, data, cfg, method, device, on_step=on_step)
    acc = evaluate(model, data, device)
    report = stats["sparsity"]
    metrics = {
        **acc,
        "dense_val_accuracy": dense["val_accuracy"],
        "dense_test_accuracy": dense["test_accuracy"],
        "sparsity": report["overall"],
        "zero_weights": report["zero_weights"],
        "pruned_weights": report["pruned_weights"],
        "steps": stats["steps"],
        "train_seconds": stats["train_seconds"],
        "device": stats["device"],
    }
    meta = save_pruned(
        model,
        tokenizer,
        out_dir,
        cfg,
        label_names=data.label_names,
        technique=TECHNIQUES[method],
        settings=_settings(cfg, method),
        parent=student_meta,
        metrics=metrics,
        extra={
            "sparsity": {"overall": report["overall"], "layers": report["layers"]},
            "schedule": stats["schedule"],
        },
    )
    log.info(
        "%s: sparsity %.4f, val accuracy %.4f (dense %.4f), weights %.2f MB (dense %.2f MB)",
        TECHNIQUES[method],
        report["overall"],
        acc["val_accuracy"],
        dense["val_accuracy"],
        meta.metrics["weights_bytes"] / 1e6,
        meta.metrics["dense_weights_bytes"] / 1e6,
    )
    return meta


def prune_structured(
    cfg: PruneConfig,
    dataset_dir: str | Path,
    teacher_dir: str | Path,
    student_dir: str | Path,
    out_dir: str | Path,
) -> ArtifactMeta:
    """Remove the least important heads and FFN neurons of a student, recover by distillation, seal it."""
    device = select_device(cfg.train.device)
    (model, tokenizer, student_meta), _, data = load_inputs(cfg, dataset_dir, teacher_dir, student_dir, device)
    bert_layers(model)  # a clear error for non-BERT models before the importance pass
    dense = evaluate(model, data, device)
    stats = structured_prune_model(model, data, cfg, device)
    acc = evaluate(model, data, device)
    structure = stats["structure"]
    metrics = {
        **acc,
        "dense_val_accuracy": dense["val_accuracy"],
        "dense_test_accuracy": dense["test_accuracy"],
        "val_accuracy_before_recovery": stats["val_accuracy_before_recovery"],
        "parameters": stats["parameters_after"],
        "dense_parameters": stats["parameters_before"],
        "parameter_reduction": 1 - stats["parameters_after"] / stats["parameters_before"],
        "heads_per_layer": structure["heads"],
        "intermediate_sizes": structure["intermediate"],
        "steps": stats["steps"],
        "train_seconds": stats["train_seconds"],
        "device": stats["device"],
    }
    meta = save_pruned(
        model,
        tokenizer,
        out_dir,
        cfg,
        label_names=data.label_names,
        technique=TECHNIQUES["structured"],
        settings=_settings(cfg, "structured"),
        parent=student_meta,
        metrics=metrics,
        extra={"structure": structure, "kept_heads": stats["kept_heads"]},
    )
    log.info(
        "prune-structured: %.2fM -> %.2fM parameters, val accuracy %.4f (dense %.4f, %.4f before recovery)",
        stats["parameters_before"] / 1e6,
        stats["parameters_after"] / 1e6,
        acc["val_accuracy"],
        dense["val_accuracy"],
        stats["val_accuracy_before_recovery"],
    )
    return meta
