"""Builders and constants shared by the test modules (no test module imports another).

Fixtures live in ``conftest.py``; what a test calls directly (a record with chosen figures,
a tiny trained artifact, a promotion decision) lives here.
"""

from __future__ import annotations

import json
import random
import shutil
import uuid
from pathlib import Path

from shrink.artifact import write_artifact
from shrink.config import PipelineConfig, from_dict
from shrink.gate import decide
from shrink.promote import current_production
from shrink.slo import gate_config

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT / ".." / "shared" / "data").resolve()
CLINC = DATA / "clinc150"
BANKING = DATA / "banking77"
# Ten intents from different domains, plus out-of-scope: small, real, and hard enough to learn from.
SLICE_LABELS = [
    "balance",
    "book_flight",
    "calories",
    "change_language",
    "cook_time",
    "credit_score",
    "play_music",
    "translate",
    "weather",
    "what_is_your_name",
    "oos",
]


# --------------------------------------------------------------------------- tiny trained models


def train_tiny(src: Path, dataset: Path, out: Path) -> Path:
    """Train the tiny BERT briefly on the slice: untrained logits are near-tied, so agreement would be noise."""
    import torch

    from shrink.data import load_prepared
    from shrink.models import load_classifier, load_tokenizer, save_classifier

    dd, info = load_prepared(dataset)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CI machine is shared; one thread is as fast for a 64-wide model
    try:
        torch.manual_seed(0)
        model, tok = load_classifier(src), load_tokenizer(src)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        rows = list(zip(list(dd["train"]["text"]), list(dd["train"]["label"]), strict=True))
        rng = random.Random(0)
        model.train()
        for _ in range(6):
            rng.shuffle(rows)
            for i in range(0, len(rows), 32):
                batch = rows[i : i + 32]
                enc = tok([t for t, _ in batch], padding=True, truncation=True, max_length=32, return_tensors="pt")
                loss = model(**enc, labels=torch.tensor([label for _, label in batch])).loss
                loss.backward()
                opt.step()
                opt.zero_grad()
        model.eval()
    finally:
        torch.set_num_threads(threads)
    save_classifier(model, tok, out, label_names=info.label_names, technique="fine-tune", settings={"max_length": 32})
    return out


def trained_artifact(tmp_path_factory, tiny_model_dir, clinc_slice) -> Path:
    """The trained tiny classifier artifact, built once per test session and shared by the quantization tests."""
    out = tmp_path_factory.getbasetemp() / "quant-trained-tiny"
    if not (out / "shrink.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        train_tiny(tiny_model_dir, clinc_slice, out)
    return out


def built(tmp_path_factory, name: str, make) -> Path:
    """An artifact built once per session under a fixed name (shared across the quantization test files)."""
    out = tmp_path_factory.getbasetemp() / f"quant-{name}"
    if not (out / "shrink.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        make(out)
    return out


# --------------------------------------------------------------------------- gate records


LABELS = ["balance", "oos", "transfer", "weather"]


def record(
    name,
    *,
    acc=0.90,
    p50=5.0,
    p95=6.0,
    size=90.0,
    mem=400.0,
    qps=None,
    oos_recall=0.6,
    per_class=None,
    majority=0.3,
    hw="hw-a",
    data="data-1",
    content_hash=None,
    has_oos=True,
    labels=None,
    raw=None,
    oos_rule=None,
):
    """A hand-made ``shrink.benchmark/v1`` record with the figures a test needs.

    ``raw``: the accuracy figures without the model's oos rule (``accuracy.raw``), ``oos_rule``
    the rule itself (the record's ``oos``); both absent by default, as in records written before it.
    """
    labels = labels or LABELS
    per_class = per_class or dict.fromkeys(labels, acc)
    extra = {"oos": oos_rule} if oos_rule is not None else {}
    return {
        **extra,
        "schema": "shrink.benchmark/v1",
        "candidate": name,
        "artifact": {
            "technique": name,
            "format": "onnx",
            "precision": "int8",
            "content_hash": content_hash or f"hash-{name}",
            "uri": f"/artifacts/{name}",
            "lineage": [],
        },
        "label_names": labels,
        "dataset": {"split": "test", "examples": 400, "fingerprint": data, "has_oos": has_oos},
        "accuracy": {
            "accuracy": acc,
            "in_scope_accuracy": acc,
            "oos_recall": oos_recall if has_oos else None,
            "oos_precision": 0.9 if has_oos else None,
            "macro_f1": acc,
            "per_class": per_class,
            "majority_fraction": majority,
            **({"raw": raw} if raw is not None else {}),
        },
        "latency_ms": {
            "p50": p50,
            "p95": p95,
            "p99": p95 * 1.2,
            "mean": p50,
            "std": 0.2,
            "samples": 200,
            "p50_ci95": [p50 * 0.98, p50 * 1.02],
            "p95_ci95": [p95 * 0.97, p95 * 1.03],
            "model_p50": p50 * 0.8,
            "model_p95": p95 * 0.8,
            "warmup": 10,
        },
        "throughput_qps": qps if qps is not None else {"8": 1000.0 / p50, "32": 1500.0 / p50},
        "size": {
            "model_bytes": int(size * 1e6),
            "model_mb": size,
            "artifact_bytes": int(size * 1e6) + 500_000,
            "parameters": 22_700_000,
            "nonzero_parameters": 22_700_000,
        },
        "memory": {"peak_rss_mb": mem},
        "load_time_s": 0.4,
        "threads": {"intra_op": 1, "inter_op": 1},
        "hardware": {
            "fingerprint": hw,
            "cpu_model": f"CPU {hw}",
            "cores_used": 1,
            "logical_cpus": 2,
            "isa": {"avx2": True, "avx512_vnni": False, "amx": False},
            "libraries": {"torch": "2.13.0", "onnxruntime": "1.31.1"},
        },
        "cost": {
            "qps_per_core": 1500.0 / p50,
            "usd_per_million": 0.05,
            "instance_type": "local",
            "instance_price_per_hour": 0.0,
        },
        "created": "2026-11-21T20:00:00Z",
        "duration_s": 30.0,
    }


# --------------------------------------------------------------------------- registry


REGISTRY = "s3://shrink-models"


def make_artifact(path, seed, fmt="onnx", files=1, size=2_000):
    """A tiny sealed artifact: random 'weights' (a promotion does not care what they are) and a tokenizer."""
    path.mkdir(parents=True)
    rng = random.Random(seed)
    suffix = ".onnx" if fmt == "onnx" else ".safetensors"
    for i in range(files):
        (path / f"model{i or ''}{suffix}").write_bytes(rng.randbytes(size))
    (path / "tokenizer.json").write_text(json.dumps({"seed": seed}))
    technique = "ort-quantize-dynamic" if fmt == "onnx" else "distill"
    meta = write_artifact(
        path,
        format=fmt,
        precision="int8" if fmt == "onnx" else "fp32",
        label_names=LABELS,
        technique=technique,
        runtime={"intra_op_threads": 1} if fmt == "onnx" else None,
    )
    return path, meta


def decision_for(name, meta, model_name, candidate="ort_int8_dynamic", s3=None, **rec):
    """The real gate's decision on a teacher and one candidate that is this artifact."""
    cfg = gate_config({"slos": [], "model_name": model_name})
    records = [record("teacher", p95=10.0), record(candidate, content_hash=meta.content_hash(), **rec)]
    d = decide(records, cfg, current_production(model_name, REGISTRY, s3=s3))
    assert d["chosen"] == candidate, d["reason"]
    return d, cfg


def fresh_name():
    return f"test-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------- pipelines


DEMO_CONFIG = ROOT / "pipelines" / "configs" / "clinc150.yaml"
TRAIN = {"epochs": 6, "learning_rate": 3e-3, "batch_size": 16, "max_length": 32, "early_stopping_patience": 0}


def tiny_pipeline_config(clinc_dir, tiny_model_dir) -> PipelineConfig:
    """The tiny DAG's config: run by tests/test_pipeline_local.py, and in containers by tests/test_images.py."""
    return from_dict(
        PipelineConfig,
        {
            "name": "shrink-test",
            "model_name": "tiny-intent",
            "data": {"source": str(clinc_dir), "labels": SLICE_LABELS, "max_per_class": 30, "seed": 0},
            "teacher": {"base_model": str(tiny_model_dir), "train": TRAIN},
            "distill": {
                "student_layers": [0, 2],
                "train": {**TRAIN, "epochs": 4},
                # A shape search: a 1- and a 2-layer student, each down the ONNX INT8 path to the gate.
                "search": {"depth": [1, 2], "alpha": [0.5], "temperature": [2.0], "learning_rate": [3e-3]},
            },
            # Short in-step timing of the INT8 variants (tests/test_quantize_search.py times the default).
            "quantize": {"calibration_samples": 32, "search": {"timing_rounds": 2, "timing_requests": 30}},
            # No reference row: tests/test_reference.py covers it; timing BERT-base here would add a minute.
            # One latency round (one fresh worker process, not three) per candidate: every benchmark in the DAG
            # runs twice in tests/test_pipeline_local.py; the rounds are tested in tests/test_benchmark*.py.
            "benchmark": {
                "warmup": 5,
                "latency_samples": 50,
                "latency_rounds": 1,
                "batch_sizes": [8],
                "throughput_queries": 32,
                "bootstrap_resamples": 100,
                "reference": None,
            },
            "gate": {
                "slos": [
                    {
                        "metric": "accuracy",
                        "direction": "higher_is_better",
                        "kind": "max_degradation",
                        "value": 0.15,
                        "baseline": "teacher",
                    },
                    {"metric": "p95_latency_ms", "direction": "lower_is_better", "kind": "threshold", "value": 5000.0},
                ],
                "max_majority_fraction": 0.6,
            },
        },
    )
