"""The reference row: BERT-base's architecture timed in the same run, so "Nx faster" is a ratio from one run.

Why in the run and not a number from a paper or an earlier run: on these machines a model
times 15-40% apart from one hour to the next, so "100x faster than BERT-base" only means
something when BERT-base is timed on the same cores, in the same hour, through the same
code path (:func:`shrink.runtime.open_classifier`, the benchmark's worker processes and
timing loop) as the candidates. What is timed is the architecture, not a trained model:
``transformers.BertConfig``'s defaults are bert-base-uncased's shape (12 layers, hidden
768, 12 heads, FFN 3072, 30,522 WordPieces), and latency and size depend on the shape
only, so random weights (seeded) time exactly as the trained ones would. Nothing is
downloaded. Accuracy is not measured (random weights have none); the book's figure for
the trained BERT-base on CLINC150 is 86.7%.

The record (``shrink.reference/v1``) is not a candidate: the gate never promotes it; it is
the baseline of goals written ``baseline: reference`` and a row of the report.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from shrink.artifact import ArtifactMeta, read_meta
from shrink.config import BenchmarkConfig
from shrink.errors import ShrinkError

SCHEMA = "shrink.reference/v1"
CANDIDATE = "reference"
# Architectures a reference may name: transformers config overrides on BertConfig's defaults.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "bert-base": {},  # BertConfig() is bert-base-uncased's shape
    "bert-large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096},
}
DISPLAY = {"bert-base": "BERT-base", "bert-large": "BERT-large"}
SEED = 0
# What the record says of the reference's shape (transformers config keys).
SHAPE_KEYS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size")


def build_reference(architecture: str, teacher_dir: str | Path, out_dir: str | Path) -> ArtifactMeta:
    """Write a randomly initialised ``architecture`` classifier as a sealed artifact, with the teacher's tokenizer.

    The head has the teacher's labels and the vocabulary is at least the tokenizer's, so every
    id the tokenizer gives has an embedding row (a larger teacher vocabulary makes the reference
    larger, never wrong). Returns the sealed metadata; its ``settings.shape`` is the model's shape.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from shrink.models import load_tokenizer, save_classifier

    if architecture not in ARCHITECTURES:
        raise ShrinkError(f"benchmark.reference: {architecture!r} is not one of {', '.join(ARCHITECTURES)} (or null)")
    teacher = read_meta(teacher_dir)
    tokenizer = load_tokenizer(teacher_dir)
    labels = teacher.label_names
    config = BertConfig(**ARCHITECTURES[architecture])
    config.vocab_size = max(config.vocab_size, len(tokenizer))
    config.num_labels = len(labels)
    torch.manual_seed(SEED)
    model = BertForSequenceClassification(config).eval()
    return save_classifier(
        model,
        tokenizer,
        out_dir,
        label_names=labels,
        technique="reference",
        settings={
            "architecture": architecture,
            "weights": f"random (seed {SEED})",
            "max_length": 128,
            "shape": {k: getattr(config, k) for k in SHAPE_KEYS},
        },
    )


def measure_reference(
    architecture: str, teacher_dir: str | Path, dataset_dir: str | Path, cfg: BenchmarkConfig
) -> dict[str, Any]:
    """Build the reference and time it like a candidate: batch-1 latency and size only.

    ``cfg.reference_samples`` requests (not ``latency_samples``: at ~50 ms each a full count
    would add a minute for a figure whose p50 two hundred requests pin down), in the same
    fresh, pinned worker processes and on the same test queries as the candidates.
    """
    from shrink.benchmark import eval_selection, size_report, timed_rounds
    from shrink.data import load_prepared
    from shrink.hardware import hardware_info
    from shrink.logs import log
    from shrink.metrics import percentiles

    started = time.time()
    dd, _ = load_prepared(dataset_dir)
    texts = list(dd["test"]["text"])
    if not texts:
        raise ShrinkError(f"{dataset_dir}: the test split is empty")
    _, request_idx = eval_selection(len(texts), cfg)
    samples = min(cfg.reference_samples, cfg.latency_samples)
    rounds = min(cfg.latency_rounds, samples)
    tmp = Path(tempfile.mkdtemp(prefix="shrink-reference-"))
    try:
        model_dir = tmp / "model"
        meta = build_reference(architecture, teacher_dir, model_dir)
        size = size_report(model_dir, meta)  # the sealed meta: 418 MB are not hashed a second time here
        shape = meta.settings["shape"]
        log.info(
            "reference %s: %.0f MB, %d parameters; timing %d requests",
            architecture,
            size["model_mb"],
            size["parameters"],
            samples,
        )
        timing_cfg = dataclasses.replace(cfg, latency_samples=samples, latency_rounds=rounds)
        out = timed_rounds(
            {
                "model_dir": str(model_dir),
                "eval_texts": [],
                "latency_texts": [texts[i] for i in request_idx],
                "warmup": min(cfg.warmup, 10),
                "batch_sizes": [],
                "throughput_queries": 0,
                "intra_op_threads": cfg.intra_op_threads,
                "eval_batch_size": cfg.eval_batch_size,
            },
            timing_cfg,
            latency_only=True,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lat = percentiles(out["latency_ms"])
    record = {
        "schema": SCHEMA,
        "candidate": CANDIDATE,
        "architecture": architecture,
        "display": DISPLAY.get(architecture, architecture),
        "weights": f"random (seed {SEED}): timing and size only",
        "shape": shape,
        "latency_ms": {**lat, "model_p50": float(np.percentile(out["model_ms"], 50)), "rounds": rounds},
        "size": size,
        "memory": {"peak_rss_mb": out["peak_rss_mb"]},
        "hardware": hardware_info(cfg.intra_op_threads),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": time.time() - started,
    }
    log.info("reference %s: p50 %.2f ms, p95 %.2f ms", architecture, lat["p50"], lat["p95"])
    return record


def ratios(record: dict[str, Any], reference: dict[str, Any]) -> dict[str, float | None]:
    """How many times faster (p50, p95) and smaller (weights) a candidate's record is than the reference's."""

    def ratio(ref: Any, value: Any) -> float | None:
        ok = isinstance(ref, int | float) and isinstance(value, int | float) and value > 0
        return float(ref) / float(value) if ok else None

    lat, ref_lat = record.get("latency_ms") or {}, reference.get("latency_ms") or {}
    size, ref_size = record.get("size") or {}, reference.get("size") or {}
    return {
        "p50_speedup": ratio(ref_lat.get("p50"), lat.get("p50")),
        "p95_speedup": ratio(ref_lat.get("p95"), lat.get("p95")),
        "size_reduction": ratio(ref_size.get("model_mb"), size.get("model_mb")),
    }


def reference_problems(record: Any) -> list[str]:
    """Why a reference record cannot be used (empty when it can): it is then left out, never guessed."""
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        return [f"not a {SCHEMA} record"]
    lat, size = record.get("latency_ms"), record.get("size")
    problems = []
    if not isinstance(lat, dict) or not all(isinstance(lat.get(k), int | float) and lat[k] > 0 for k in ("p50", "p95")):
        problems.append("latency_ms.p50/p95 missing or not positive")
    if not isinstance(size, dict) or not (isinstance(size.get("model_mb"), int | float) and size["model_mb"] > 0):
        problems.append("size.model_mb missing or not positive")
    return problems
