"""Measure one candidate model the way production will see it; the gate decides on these figures.

Every candidate, whatever its format, is loaded through
:func:`shrink.runtime.open_classifier`, so what is measured is what ships. The
timing runs in a FRESH worker process (``python -m shrink.benchmark --worker``):
peak memory and load time then belong to this model alone, not to whatever the
caller loaded before, and no earlier candidate's threads or caches linger. The
caller runs candidates one after another, never in parallel, so they never share
cores while being timed.

Latency is what a request sees: tokenize, run, argmax (and the artifact's
out-of-scope rule, :mod:`shrink.oos`), batch 1, real test
queries in a fixed (seeded) order so their lengths follow the real distribution,
after a warm-up. Thread counts are fixed by the config (torch and ORT alike):
comparing a 1-thread FP32 model with a 4-thread INT8 one would measure the
threads, not the compression. The timed requests are spread over a few fresh
processes (``latency_rounds``), each pinned to fixed cores, and pooled: one
process's p50 is precise but drifts from the next process's by more than its own
confidence interval, and the pooled figure is what repeats from run to run.

What is measured goes into one :class:`shrink.record.BenchmarkRecord`, the document the
gate, the report and promotion read; :mod:`shrink.record` owns its schema.

Command line (a single candidate, by hand)::

    python -m shrink.benchmark MODEL_DIR DATASET_DIR --candidate student [--config c.yaml] [--out r.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shrink.artifact import META_FILE, ArtifactMeta, model_files, read_meta
from shrink.config import BenchmarkConfig, from_dict, load_yaml, to_dict
from shrink.errors import ShrinkError
from shrink.metrics import OOS_LABEL, accuracy_report, bootstrap_ci, confusion_matrix, percentiles
from shrink.oos import rule_of
from shrink.record import RAW_FIGURES, SCHEMA, BenchmarkRecord, write_record

__all__ = [
    "Measurement",
    "accuracy_report",
    "bootstrap_ci",
    "confusion_matrix",
    "count_parameters",
    "eval_selection",
    "measure",
    "percentiles",
    "pinned_cpus",
    "timed_rounds",
    "run_benchmark",
    "size_report",
]

# Sizes are in MiB (2**20 bytes), the unit of the usual reference figures: BERT-base FP32 is "418 MB".
MB = 1024 * 1024

# --------------------------------------------------------------------------- size

# safetensors dtype -> (bytes per element, unsigned view used to test "is zero" bit-exactly)
_ST_DTYPES = {
    "F64": (8, np.uint64),
    "F32": (4, np.uint32),
    "F16": (2, np.uint16),
    "BF16": (2, np.uint16),
    "F8_E4M3": (1, np.uint8),
    "F8_E5M2": (1, np.uint8),
    "I64": (8, np.int64),
    "I32": (4, np.int32),
    "I16": (2, np.int16),
    "I8": (1, np.int8),
    "U64": (8, np.uint64),
    "U32": (4, np.uint32),
    "U16": (2, np.uint16),
    "U8": (1, np.uint8),
    "BOOL": (1, np.uint8),
}
# Everything but the sign bit: +0.0 and -0.0 are both zero weights.
_FLOAT_MAGNITUDE = {
    "F64": 0x7FFF_FFFF_FFFF_FFFF,
    "F32": 0x7FFF_FFFF,
    "F16": 0x7FFF,
    "BF16": 0x7FFF,
    "F8_E4M3": 0x7F,
    "F8_E5M2": 0x7F,
}


def _safetensors_counts(buf: Any, where: str) -> tuple[int, int]:
    """(elements, non-zero elements) of every tensor in a safetensors blob, read without a framework.

    Parsing the header directly counts any dtype (bf16, fp8, int8 with scales)
    exactly and never materialises more than one tensor at a time.
    """
    data = np.frombuffer(buf, dtype=np.uint8)
    if data.size < 8:
        raise ShrinkError(f"{where}: not a safetensors file (too short)")
    n = int(data[:8].view("<u8")[0])
    try:
        header = json.loads(bytes(data[8 : 8 + n]))
    except (ValueError, UnicodeDecodeError):
        raise ShrinkError(f"{where}: not a safetensors file (bad header)") from None
    base = 8 + n
    total = nonzero = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = info.get("dtype")
        if dtype not in _ST_DTYPES:
            raise ShrinkError(f"{where}: tensor {name!r} has dtype {dtype!r} this benchmark cannot count")
        size, view = _ST_DTYPES[dtype]
        count = math.prod(info["shape"])
        begin, end = info["data_offsets"]
        if end - begin != count * size or base + end > data.size:
            raise ShrinkError(f"{where}: tensor {name!r} has inconsistent offsets (truncated file?)")
        values = np.frombuffer(data, dtype=view, count=count, offset=base + begin)
        if dtype in _FLOAT_MAGNITUDE:
            values = values & view(_FLOAT_MAGNITUDE[dtype])
        total += count
        nonzero += int(np.count_nonzero(values))
    return total, nonzero


def _onnx_counts(path: Path) -> tuple[int, int]:
    """(elements, non-zero elements) of an ONNX graph's initializers, external data included."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError and friends
        raise ShrinkError(f"{path}: not a readable ONNX model: {exc}".splitlines()[0]) from None
    total = nonzero = 0
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init, base_dir=str(path.parent))
        total += int(arr.size)
        nonzero += int(np.count_nonzero(arr))
    for sparse in model.graph.sparse_initializer:
        total += math.prod(sparse.dims)
        nonzero += int(np.count_nonzero(numpy_helper.to_array(sparse.values, base_dir=str(path.parent))))
    return total, nonzero


def count_parameters(model_dir: str | Path, meta: ArtifactMeta | None = None) -> tuple[int, int]:
    """(parameters, non-zero parameters) stored in an artifact's weight files.

    "Parameters" are the values stored on disk: for an INT8 model that includes
    its scales and zero points, for ONNX every initializer. Non-zero is counted
    on the stored values, which is what unstructured pruning changes.
    """
    root = Path(model_dir)
    meta = meta or read_meta(root)
    total = nonzero = 0
    for rel in model_files(root, meta):
        path = root / rel
        if rel.endswith(".safetensors"):
            with open(path, "rb") as fh:
                counts = _safetensors_counts(np.fromfile(fh, dtype=np.uint8), str(path))
        elif rel.endswith(".safetensors.zst"):
            import zstandard

            with open(path, "rb") as fh:
                blob = zstandard.ZstdDecompressor().stream_reader(fh).read()
            counts = _safetensors_counts(blob, str(path))
        elif rel.endswith(".onnx"):
            counts = _onnx_counts(path)
        else:
            continue  # ONNX external data (.data) is counted through its .onnx file
        total += counts[0]
        nonzero += counts[1]
    return total, nonzero


def size_report(model_dir: str | Path, meta: ArtifactMeta | None = None) -> dict[str, Any]:
    """The ``size`` section: bytes of the weight files and of the whole artifact, and parameter counts."""
    root = Path(model_dir)
    meta = meta or read_meta(root)
    weights = model_files(root, meta)
    if not weights:
        raise ShrinkError(f"{root / META_FILE}: lists no weight files (.safetensors, .onnx, .data, .zst)")
    model_bytes = sum(weights.values())
    artifact_bytes = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    params, nonzero = count_parameters(root, meta)
    return {
        "model_bytes": int(model_bytes),
        "model_mb": model_bytes / MB,
        "artifact_bytes": int(artifact_bytes),
        "parameters": int(params),
        "nonzero_parameters": int(nonzero),
    }


# --------------------------------------------------------------------------- the worker process


def _peak_rss_mb() -> float:
    """Peak resident memory of THIS process image in MiB.

    /proc's VmHWM, not getrusage: ru_maxrss survives exec, so a worker started by
    a large parent would report the parent's peak instead of its own.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / MB
    except OSError:
        pass
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MB


def _import_runtime(model_dir: Path, meta: ArtifactMeta) -> None:
    """Import the libraries a format needs, so load time measures the artifact, not Python imports."""
    import importlib

    import transformers  # noqa: F401 - the tokenizer comes from here for every format

    if meta.format == "onnx":
        import onnxruntime  # noqa: F401
    else:
        import torch  # noqa: F401
    loader = meta.extra.get("loader")
    if loader:
        module_name, _, func = str(loader).partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ShrinkError(f"{model_dir / META_FILE}: unknown format: loader {loader!r}: {exc}") from None
        if not callable(getattr(module, func, None)):
            raise ShrinkError(f"{model_dir / META_FILE}: unknown format: {module_name} has no function {func!r}")


def _set_threads(threads: int) -> int:
    """Fix torch's intra-op threads and a single inter-op thread (ORT takes its own from the session)."""
    try:
        import torch
    except ImportError:
        return 1
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process; the worker is fresh, so this only happens in-process
        pass
    return 1


def _worker(req: dict[str, Any]) -> dict[str, Any]:
    """Load one model and time it; runs inside the fresh worker process."""
    from shrink.logs import log, progress
    from shrink.runtime import open_classifier

    model_dir = Path(req["model_dir"])
    threads = int(req["intra_op_threads"])
    meta = read_meta(model_dir, verify=False)  # open_classifier verifies; this only picks the libraries
    _import_runtime(model_dir, meta)
    inter_op = _set_threads(threads)
    if meta.format == "onnx":
        inter_op = int(meta.runtime.get("inter_op_threads", 1))

    start = time.perf_counter()
    clf = open_classifier(model_dir, threads=threads)
    load_time = time.perf_counter() - start
    log.info("loaded %s (%s/%s) in %.2fs", model_dir, meta.format, meta.precision, load_time)

    texts: list[str] = req["latency_texts"]
    offset = int(req.get("latency_offset", 0))
    width = clf.logits(clf.encode(texts[:1])).shape[-1]
    if width != len(meta.label_names):
        raise ShrinkError(
            f"{model_dir}: model outputs {width} logits but shrink.json names {len(meta.label_names)} labels"
        )

    n = len(texts)
    samples = int(req["latency_samples"])
    # This round times requests offset .. offset + samples of the fixed order, so the rounds together
    # cover the same queries one long run would.
    mine = [texts[(offset + i) % n] for i in range(samples)]
    encoded = [clf.encode([t]) for t in mine]
    for i in range(int(req["warmup"])):
        clf.predict([texts[i % n]])
        clf.logits(encoded[i % samples])
    gc.collect()
    # Request and model-only timings alternate query by query, so both see the same machine; timed in two
    # phases, a change in background load between the phases would pass for a cost of tokenization.
    latency, model_ms = [], []
    for i in progress(range(samples), "latency (batch 1)"):
        text, enc = mine[i], encoded[i]
        t0 = time.perf_counter()
        clf.predict([text])
        t1 = time.perf_counter()
        clf.logits(enc)
        t2 = time.perf_counter()
        latency.append((t1 - t0) * 1e3)
        model_ms.append((t2 - t1) * 1e3)
    peak_rss = _peak_rss_mb()  # serving batch 1: before the larger throughput and accuracy batches
    timing = {
        "latency_ms": latency,
        "model_ms": model_ms,
        "peak_rss_mb": peak_rss,
        "load_time_s": load_time,
        "threads": {"intra_op": threads, "inter_op": inter_op},
        "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    if req.get("latency_only"):
        return timing

    throughput = {}
    for b in req["batch_sizes"]:
        batches = math.ceil(int(req["throughput_queries"]) / b)
        cycled = [[texts[(k * b + j) % n] for j in range(b)] for k in range(batches + 1)]
        clf.predict(cycled[0])  # warm-up at this shape
        gc.collect()
        t0 = time.perf_counter()
        for batch in progress(cycled[1:], f"throughput (batch {b})"):
            clf.predict(batch)
        throughput[str(b)] = batches * b / (time.perf_counter() - t0)

    # Accuracy batches group texts of similar length: little padding, and fast. ``run`` splits them where a
    # text's answer depends on its batch (dynamic INT8, ``Classifier.run_batch``): each is then computed
    # exactly as it is served and as ``predict`` answers it alone.
    eval_texts: list[str] = req["eval_texts"]
    bs = int(req["eval_batch_size"])
    by_length = sorted(range(len(eval_texts)), key=lambda k: (len(eval_texts[k]), k))
    # Each batch's logits give both the served answer (``predict``: the oos rule applied) and the bare argmax.
    predictions, raw = [0] * len(eval_texts), [0] * len(eval_texts)
    for i in progress(range(0, len(by_length), bs), "accuracy", total=math.ceil(len(by_length) / bs)):
        chunk = by_length[i : i + bs]
        logits = clf.run([eval_texts[k] for k in chunk])
        for k, p, r in zip(chunk, clf.decide(logits), logits.argmax(axis=-1), strict=True):
            predictions[k], raw[k] = int(p), int(r)

    return {**timing, "predictions": predictions, "raw_predictions": raw, "throughput_qps": throughput}


def _worker_main(request_path: str, result_path: str) -> int:
    from shrink.logs import setup_logging

    setup_logging()
    req = json.loads(Path(request_path).read_text())
    if req.get("cpus"):
        # Before torch/ORT start their thread pools, which inherit the mask.
        os.sched_setaffinity(0, req["cpus"])
    try:
        out = _worker(req)
        code = 0
    except ShrinkError as exc:
        out, code = {"error": str(exc)}, 2
    Path(result_path).write_text(json.dumps(out))
    return code


def _run_worker(req: dict[str, Any]) -> dict[str, Any]:
    """Run :func:`_worker` in a fresh Python process and return what it measured."""
    threads = str(req["intra_op_threads"])
    env = dict(os.environ)
    # Native thread pools read these at import: set them before torch/ORT/tokenizers start in the worker.
    env.update({"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false"})
    src = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    with tempfile.TemporaryDirectory(prefix="shrink-bench-") as tmp:
        req_path, out_path = Path(tmp) / "request.json", Path(tmp) / "result.json"
        req_path.write_text(json.dumps(req))
        cmd = [sys.executable, "-m", "shrink.benchmark", "--worker", str(req_path), str(out_path)]
        proc = subprocess.run(cmd, env=env, check=False)
        rc = proc.returncode
        if rc < 0:  # killed: on a pod, almost always the memory limit
            hint = " (out of memory? raise the step's memory limit)" if rc == -9 else ""
            raise ShrinkError(f"{req['model_dir']}: benchmark worker killed by signal {-rc}{hint}")
        if not out_path.is_file():  # a bug, not bad input: its traceback is in the log above
            raise RuntimeError(f"benchmark worker for {req['model_dir']} failed with exit code {rc}")
        out = json.loads(out_path.read_text())
    if "error" in out:
        raise ShrinkError(out["error"])
    return out


def pinned_cpus(threads: int) -> list[int] | None:
    """The cores a worker is bound to: the last ``threads`` of those this process may use.

    The last ones, because the first core of a machine usually takes most device
    interrupts. None (no pinning) where affinity is not supported or the worker
    would get every allowed core anyway.
    """
    if not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[-threads:] if threads < len(allowed) else None


def timed_rounds(base: dict[str, Any], cfg: BenchmarkConfig, latency_only: bool = False) -> dict[str, Any]:
    """Run the full worker once and latency-only workers for the other rounds; pool their timings.

    ``latency_only``: every round only times batch-1 requests (the reference row: no
    throughput, no accuracy).

    Round ``r`` times its share of the ``latency_samples`` requests, continuing the
    fixed order where round ``r - 1`` stopped. Each round's own p50 is kept, so the
    record shows how far apart fresh processes land.
    """
    from shrink.logs import log

    rounds = cfg.latency_rounds
    shares = [cfg.latency_samples // rounds + (1 if r < cfg.latency_samples % rounds else 0) for r in range(rounds)]
    cpus = pinned_cpus(cfg.intra_op_threads) if cfg.pin_cores else None
    pooled: dict[str, Any] = {}
    round_p50, load_times, offset = [], [], 0
    for r, share in enumerate(shares):
        req = {
            **base,
            "latency_samples": share,
            "latency_offset": offset,
            "latency_only": latency_only or r > 0,
            "cpus": cpus,
        }
        out = _run_worker(req)
        offset += share
        if r == 0:
            pooled = out
        else:
            pooled["latency_ms"] += out["latency_ms"]
            pooled["model_ms"] += out["model_ms"]
            pooled["peak_rss_mb"] = max(pooled["peak_rss_mb"], out["peak_rss_mb"])
        round_p50.append(float(np.percentile(out["latency_ms"], 50)))
        load_times.append(out["load_time_s"])
        if rounds > 1:
            log.info("latency round %d/%d: %d requests, p50 %.3f ms", r + 1, rounds, share, round_p50[-1])
    pooled["round_p50_ms"] = round_p50
    pooled["load_time_s"] = float(np.median(load_times))
    return pooled


# --------------------------------------------------------------------------- orchestration


@dataclass
class Measurement:
    """A benchmark record plus the confusion matrix behind its accuracy (for KFP's ClassificationMetrics)."""

    record: BenchmarkRecord
    confusion: list[list[int]]
    label_names: list[str]


def _check_loadable(model_dir: Path, meta: ArtifactMeta) -> None:
    """Refuse, before any measuring, an artifact the runtime cannot open."""
    import importlib

    where = model_dir / META_FILE
    loader = meta.extra.get("loader")
    if loader:
        module_name, _, func = str(loader).partition(":")
        module = None
        if module_name.startswith("shrink.") and func:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                pass
        if not callable(getattr(module, func, None)):
            raise ShrinkError(
                f"{where}: unknown format: loader {loader!r} is not an installed shrink.<module>:<function>"
            )
    elif meta.format == "onnx":
        name = meta.extra.get("model_file", "model.onnx")
        if name not in meta.files:
            raise ShrinkError(f"{where}: ONNX artifact without its model file {name!r}")
    elif not any(rel.endswith(".safetensors") for rel in meta.files):
        raise ShrinkError(f"{where}: PyTorch artifact without .safetensors weights and without a loader")


def eval_selection(n: int, cfg: BenchmarkConfig) -> tuple[np.ndarray, np.ndarray]:
    """(indices evaluated for accuracy, in dataset order; the same indices in the seeded request order).

    The request order is a seeded shuffle because test splits are usually grouped
    by class: the first 1,000 queries in file order would be a few intents' worth
    of lengths, not the real length distribution.
    """
    order = np.random.default_rng(cfg.seed).permutation(n)
    if cfg.max_eval_examples is not None and cfg.max_eval_examples < n:
        order = order[: cfg.max_eval_examples]
    return np.sort(order), order


def measure(
    model_dir: str | Path,
    dataset_dir: str | Path,
    cfg: BenchmarkConfig,
    candidate: str,
    model_uri: str | None = None,
) -> Measurement:
    """Benchmark one artifact on a prepared dataset's test split; see :func:`run_benchmark`."""
    from shrink.data import load_prepared, texts_fingerprint
    from shrink.hardware import hardware_info
    from shrink.logs import log
    from shrink.models import check_labels

    started = time.time()
    model_dir, dataset_dir = Path(model_dir), Path(dataset_dir)
    cfg.check("benchmark")
    meta = read_meta(model_dir)  # every sha256 verified: a tampered artifact stops here
    _check_loadable(model_dir, meta)
    dd, info = load_prepared(dataset_dir)
    check_labels(meta.label_names, info.label_names, str(model_dir / META_FILE), str(dataset_dir))
    test = dd["test"]
    texts, labels = list(test["text"]), np.asarray(test["label"], dtype=np.int64)
    if not texts:
        raise ShrinkError(f"{dataset_dir}: the test split is empty")
    eval_idx, request_idx = eval_selection(len(texts), cfg)
    eval_texts = [texts[i] for i in eval_idx]

    size = size_report(model_dir, meta)
    hardware = hardware_info(cfg.intra_op_threads)
    log.info(
        "benchmarking %s (%s, %.1f MB, %d params) on %d test examples",
        candidate,
        meta.technique,
        size["model_mb"],
        size["parameters"],
        len(eval_texts),
    )
    out = timed_rounds(
        {
            "model_dir": str(model_dir),
            "eval_texts": eval_texts,
            "latency_texts": [texts[i] for i in request_idx],
            "warmup": cfg.warmup,
            "batch_sizes": list(cfg.batch_sizes),
            "throughput_queries": cfg.throughput_queries,
            "intra_op_threads": cfg.intra_op_threads,
            "eval_batch_size": cfg.eval_batch_size,
        },
        cfg,
    )

    y_true = labels[eval_idx]
    y_pred = np.asarray(out["predictions"], dtype=np.int64)
    y_raw = np.asarray(out["raw_predictions"], dtype=np.int64)
    rule = rule_of(meta, str(model_dir / META_FILE))
    oos_label = rule.label if rule is not None else OOS_LABEL
    raw = accuracy_report(y_true, y_raw, info.label_names, oos_label)
    lat = percentiles(out["latency_ms"])
    model_lat = percentiles(out["model_ms"])
    ci = {
        f"p{q}_ci95": list(bootstrap_ci(out["latency_ms"], q, cfg.bootstrap_resamples, seed=cfg.seed)) for q in (50, 95)
    }
    cores = hardware["cores_used"]
    # One request at a time per core: capacity is 1 / mean service time (not 1 / p50).
    qps_per_core = 1000.0 / lat["mean"] / cores
    instance_cores = cfg.instance_cores or hardware["logical_cpus"]
    usd_per_million = cfg.instance_price_per_hour / 3600.0 / (qps_per_core * instance_cores) * 1e6
    artifact = meta.as_parent(model_uri)
    record: BenchmarkRecord = {
        "schema": SCHEMA,
        "candidate": candidate,
        "artifact": {
            **{k: artifact[k] for k in ("technique", "format", "precision", "content_hash", "uri")},
            "lineage": meta.lineage,
        },
        "label_names": list(meta.label_names),
        "dataset": {
            "split": "test",
            "examples": len(eval_texts),
            "fingerprint": texts_fingerprint(eval_texts),
            "has_oos": info.has_oos,
        },
        # With the artifact's oos rule (what serves); ``raw``: the bare argmax, the model without its rule.
        "accuracy": {
            **accuracy_report(y_true, y_pred, info.label_names, oos_label),
            "raw": {k: raw[k] for k in RAW_FIGURES},
        },
        "oos": rule.to_dict() if rule is not None else None,
        "latency_ms": {
            **lat,
            **ci,
            "model_p50": model_lat["p50"],
            "model_p95": model_lat["p95"],
            "warmup": cfg.warmup,
            "rounds": len(out["round_p50_ms"]),
            "round_p50": out["round_p50_ms"],
            "round_spread": (max(out["round_p50_ms"]) - min(out["round_p50_ms"])) / min(out["round_p50_ms"]),
        },
        "throughput_qps": out["throughput_qps"],
        "size": size,
        "memory": {"peak_rss_mb": out["peak_rss_mb"]},
        "load_time_s": out["load_time_s"],
        "threads": {**out["threads"], "pinned_cpus": out["cpus"] if cfg.pin_cores else None},
        "hardware": hardware,
        "cost": {
            "qps_per_core": qps_per_core,
            "usd_per_million": usd_per_million,
            "instance_type": cfg.instance_type,
            "instance_price_per_hour": cfg.instance_price_per_hour,
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": time.time() - started,
    }
    acc = record["accuracy"]
    log.info(
        "%s: accuracy %.4f (without the oos rule %.4f), p50 %.2f ms, p95 %.2f ms, %.1f MB, peak RSS %.0f MB (%.0fs)",
        candidate,
        acc["accuracy"],
        raw["accuracy"],
        lat["p50"],
        lat["p95"],
        size["model_mb"],
        out["peak_rss_mb"],
        record["duration_s"],
    )
    cm = confusion_matrix(y_true, y_pred, len(info.label_names))
    return Measurement(record=record, confusion=cm.tolist(), label_names=list(info.label_names))


def run_benchmark(
    model_dir: str | Path,
    dataset_dir: str | Path,
    cfg: BenchmarkConfig,
    candidate: str,
    model_uri: str | None = None,
) -> BenchmarkRecord:
    """Benchmark one candidate artifact on a prepared dataset; returns the ``shrink.benchmark/v1`` record.

    Accuracy is computed on the whole test split (or ``max_eval_examples`` of it);
    latency, throughput, memory and load time are measured in a fresh process.

    Raises:
        ShrinkError: the artifact's files do not match their hashes, its format or
            loader is unknown, or its label names differ from the dataset's. Nothing
            is measured in these cases.
    """
    return measure(model_dir, dataset_dir, cfg, candidate, model_uri).record


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """Benchmark one artifact from the command line, or (``--worker``) serve as the measuring process."""
    parser = argparse.ArgumentParser(prog="python -m shrink.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=2, metavar=("REQUEST", "RESULT"), help=argparse.SUPPRESS)
    parser.add_argument("model_dir", nargs="?")
    parser.add_argument("dataset_dir", nargs="?")
    parser.add_argument("--candidate", default="candidate")
    parser.add_argument("--config", help="YAML file: a benchmark section, or a pipeline config holding one")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=JSON", help="override a setting, e.g. latency_samples=200"
    )
    parser.add_argument("--out", help="write the JSON record here (default: stdout)")
    args = parser.parse_args(argv)
    if args.worker:
        return _worker_main(*args.worker)
    if not args.model_dir or not args.dataset_dir:
        parser.error("MODEL_DIR and DATASET_DIR are required")
    from shrink.logs import setup_logging

    setup_logging()
    try:
        cfg = BenchmarkConfig()
        if args.config:
            import yaml

            raw = yaml.safe_load(Path(args.config).read_text()) or {}
            section = "benchmark" if isinstance(raw, dict) and "benchmark" in raw else None
            cfg = load_yaml(BenchmarkConfig, args.config, section)
        overrides = {}
        for item in args.set:
            key, _, value = item.partition("=")
            try:
                overrides[key] = json.loads(value)
            except ValueError:
                overrides[key] = value
        cfg = from_dict(BenchmarkConfig, {**to_dict(cfg), **overrides}, "benchmark")
        record = run_benchmark(args.model_dir, args.dataset_dir, cfg, args.candidate, args.model_dir)
    except ShrinkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.out:
        write_record(record, args.out)
    else:
        print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
