"""shrink's ORT INT8 against optimum-onnx's and Olive's on the same student, timed side by side in one process.

Not CI (for ``make bench``). Each peer quantizes the demo's own student with its own
tools, in its own virtualenv (created here when missing; optimum-onnx pins
transformers 4.x, so it cannot share shrink's environment):

- **optimum-onnx**: ``ORTModelForSequenceClassification.from_pretrained(student,
  export=True)`` (its own ONNX export), then ``ORTQuantizer`` with
  ``AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)``;
- **Olive 0.13**: ``OrtTransformersOptimization`` then ``OnnxDynamicQuantization``, both
  with their defaults except ``model_type: bert`` and the student's ``num_heads`` /
  ``hidden_size`` (left at 0, ORT cannot detect them on this export, "Failed to detect
  num_heads and hidden_size", and Olive's attention stays unfused and slower), on shrink's
  FP32 export of the student (``export_onnx``'s output, the graph shrink's step starts from);
- **shrink**: ``shrink.quantize.quantize_ort_dynamic`` of ``optimize_onnx``'s output
  with the pipeline config's ``quantize`` section (this checkout's code, so a
  change to the step shows here), plus the plain export when it is there.

Then, in THIS process (shrink's ONNX Runtime), every model is sealed as a shrink
artifact beside the student's tokenizer files and opened through
``shrink.runtime.open_classifier``: the same tokenizer (the student's
tokenizer.json), the same session settings (graph optimization "all", one intra-op
and one inter-op thread), the same timing loop. Latency: batch 1, tokenize + run,
``--queries`` real CLINC150 test queries (a seeded sample) in ``--rounds``
interleaved rounds (each round runs every model, order rotated, on the same
queries after a warm-up), on one pinned core. Accuracy: every query of the test
split and of the validation split (a second held-out sample: differences of a few tenths
of a point between these models are within either split's noise), batch 1, as served; and
on the test split the way shrink's benchmark measures it for the gate ("x64": batches of
64 texts of similar length, which moves a dynamically quantized model's activation
scales). Agreement: the share of test texts on which a model predicts what the FP32
optimized graph predicts, at batch 1. Size: the weight files.

    .venv/bin/python bench/peers.py --run .shrink/runs/<run-id> [--out results/peers]
        [--queries 1200] [--rounds 12] [--config pipelines/configs/clinc150.yaml]
    .venv/bin/python bench/peers.py --student DIR --onnx DIR --optimized DIR [--dataset D] ...

Writes ``<out>/peers.json`` and ``<out>/peers.md`` and prints the table (p50/p95 ms,
model-only p50, p50 ratio to the faster peer, accuracy, size).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PEERS_DIR = ROOT / ".shrink" / "peers"
# The CPU build of torch comes from pip's configured find-links; an unpinned torch pulls GBs of CUDA.
TORCH = "torch==2.13.0"
# Same ONNX Runtime as shrink's, so the peers' quantizers write what this runtime reads.
ORT = "onnxruntime==1.32.0"
REQUIREMENTS = {
    "optimum": [TORCH, ORT, "optimum-onnx==0.1.0"],
    "olive": [TORCH, ORT, "olive-ai==0.13.0", "onnx", "requests"],
}

OPTIMUM_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from optimum.onnxruntime import ORTModelForSequenceClassification, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    student, out = Path(sys.argv[1]), Path(sys.argv[2])
    started = time.time()
    model = ORTModelForSequenceClassification.from_pretrained(student, export=True)
    model.save_pretrained(out / "export")
    quantizer = ORTQuantizer.from_pretrained(out / "export")
    qconfig = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)
    quantizer.quantize(save_dir=out / "quantized", quantization_config=qconfig)
    files = sorted(p.name for p in (out / "quantized").glob("*.onnx"))
    print(json.dumps({"model": str(out / "quantized" / files[0]), "seconds": time.time() - started,
                      "config": qconfig.__dict__}, default=str))
    """
)

OLIVE_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from olive.workflows import run as olive_run

    onnx_model, out = Path(sys.argv[1]), Path(sys.argv[2])
    hf = json.loads((onnx_model.parent / "config.json").read_text())
    started = time.time()
    config = {
        "input_model": {"type": "ONNXModel", "model_path": str(onnx_model)},
        "systems": {"local": {"type": "LocalSystem",
                              "accelerators": [{"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}]}},
        "passes": {
            "optimize": {"type": "OrtTransformersOptimization", "model_type": "bert",
                         "num_heads": hf["num_attention_heads"], "hidden_size": hf["hidden_size"]},
            "quantize": {"type": "OnnxDynamicQuantization"},
        },
        "host": "local",
        "target": "local",
        "cache_dir": str(out / "cache"),
        "output_dir": str(out / "output"),
        "evaluate_input_model": False,
        "log_severity_level": 1,
    }
    olive_run(config)
    found = sorted((out / "output").rglob("*.onnx"), key=lambda p: p.stat().st_mtime)
    print(json.dumps({"model": str(found[-1]), "seconds": time.time() - started}))
    """
)


def ensure_venv(name: str) -> Path:
    """The peer's virtualenv under .shrink/peers/, created (and its packages installed) when missing."""
    venv = PEERS_DIR / name
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    wanted = "\n".join(REQUIREMENTS[name])
    if marker.is_file() and marker.read_text() == wanted:
        return python
    PEERS_DIR.mkdir(parents=True, exist_ok=True)
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    print(f"installing {name}: {' '.join(REQUIREMENTS[name])} (a few minutes)", file=sys.stderr, flush=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *REQUIREMENTS[name]], check=True)
    marker.write_text(wanted)
    return python


def versions(python: Path, packages: list[str]) -> dict[str, str]:
    """Installed versions of ``packages`` in a virtualenv (what the table was made with)."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for p in sys.argv[1:]:\n"
        "    try: out[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([str(python), "-c", code, *packages], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def run_peer(name: str, script: str, source: Path, out: Path) -> dict:
    """Run a peer's quantization in its own virtualenv; returns what its script printed (model path, seconds)."""
    result = out / "result.json"
    if result.is_file():
        return json.loads(result.read_text())
    python = ensure_venv(name)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = {
        **os.environ,
        "PYTHONPATH": "",
        "OLIVE_DISABLE_TELEMETRY": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    print(f"{name}: quantizing {source}", file=sys.stderr, flush=True)
    proc = subprocess.run(
        [str(python), "-c", script, str(source), str(out)], env=env, cwd=out, capture_output=True, text=True
    )
    (out / "log.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"error: {name} failed (exit {proc.returncode}); see {out / 'log.txt'}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    info["versions"] = versions(
        python, ["optimum", "optimum-onnx", "olive-ai", "onnxruntime", "onnx", "transformers", "torch"]
    )
    result.write_text(json.dumps(info, indent=2))
    return info


def hf_student(student: Path, out: Path) -> Path:
    """The student as a plain Hugging Face directory (config, safetensors, tokenizer), for optimum's exporter."""
    out.mkdir(parents=True, exist_ok=True)
    for item in student.iterdir():
        if item.is_file() and item.name != "shrink.json":
            shutil.copy2(item, out / item.name)
    return out


def seal_peer(model_file: Path, student: Path, out: Path, technique: str) -> Path:
    """A peer's ONNX model as a shrink artifact: its graph + external data, the student's tokenizer and labels."""
    from shrink.artifact import read_meta, write_artifact
    from shrink.config import RuntimeConfig
    from shrink.onnx_export import runtime_settings

    meta = read_meta(student)
    if (out / "shrink.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(model_file, out / "model.onnx")
    for data in model_file.parent.glob(model_file.name + ".data"):
        shutil.copy2(data, out / "model.onnx.data")
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        if (student / name).is_file():
            shutil.copy2(student / name, out / name)
    write_artifact(
        out,
        format="onnx",
        precision="int8",
        label_names=meta.label_names,
        technique=technique,
        settings={k: v for k, v in meta.settings.items() if k == "max_length"},
        runtime=runtime_settings(RuntimeConfig()),
        extra={"model_file": "model.onnx"},
    )
    return out


def time_side_by_side(dirs: dict[str, Path], queries: list[str], rounds: int, warmup: int = 20) -> dict:
    """Batch-1 latency (tokenize + run) and model-only time of every model, interleaved, on one pinned core."""
    import gc

    import numpy as np

    from shrink.benchmark import pinned_cpus
    from shrink.runtime import open_classifier

    cpus = pinned_cpus(1)
    if cpus:
        os.sched_setaffinity(0, cpus)
    models = {n: open_classifier(d, threads=1) for n, d in dirs.items()}
    names = list(models)
    latency = {n: [] for n in names}
    model_ms = {n: [] for n in names}
    share = -(-len(queries) // rounds)
    for r in range(rounds):
        chunk = queries[r * share : (r + 1) * share]
        for k in range(len(names)):
            name = names[(k + r) % len(names)]
            clf = models[name]
            encoded = [clf.encode([q]) for q in chunk]
            for q in chunk[:warmup]:
                clf.predict([q])
            gc.collect()
            for q, enc in zip(chunk, encoded, strict=True):
                t0 = time.perf_counter()
                clf.predict([q])
                t1 = time.perf_counter()
                clf.logits(enc)
                t2 = time.perf_counter()
                latency[name].append((t1 - t0) * 1e3)
                model_ms[name].append((t2 - t1) * 1e3)
        print(f"round {r + 1}/{rounds}", file=sys.stderr, flush=True)
    return {
        n: {
            "p50_ms": float(np.percentile(latency[n], 50)),
            "p95_ms": float(np.percentile(latency[n], 95)),
            "model_p50_ms": float(np.percentile(model_ms[n], 50)),
            "requests": len(latency[n]),
        }
        for n in names
    }


def accuracy(directory: Path, texts: list[str], labels) -> tuple[float, list[int]]:
    """Accuracy on every text at batch 1 (as served: no padding in any activation range)."""
    import numpy as np

    from shrink.runtime import open_classifier

    clf = open_classifier(directory, threads=1)
    pred = np.asarray([int(clf.predict([t])[0]) for t in texts])
    return float((pred == labels).mean()), pred.tolist()


def accuracy_as_benchmarked(directory: Path, texts: list[str], labels, batch_size: int = 64) -> float:
    """Accuracy the way shrink's benchmark (and so the gate) measures it: batches of 64 texts of similar length.

    Dynamic INT8 quantizes activations per tensor at run time, so a batch's padding and its
    other texts move every text's scales: the figure differs from batch 1 by a few tenths.
    """
    import numpy as np

    from shrink.runtime import open_classifier

    clf = open_classifier(directory, threads=1)
    order = sorted(range(len(texts)), key=lambda k: (len(texts[k]), k))
    pred = np.zeros(len(texts), dtype=np.int64)
    for i in range(0, len(order), batch_size):
        chunk = order[i : i + batch_size]
        pred[chunk] = clf.predict([texts[k] for k in chunk])
    return float((pred == labels).mean())


def _in_search(path: Path) -> bool:
    """Whether a step output lies inside a shape-search iteration (kfp.local's for-loop-* folders)."""
    return any(p.startswith("for-loop-") for p in path.parts)


def find_in_run(run: Path) -> dict[str, Path]:
    """The student, its FP32 export, its optimized graph and the prepared dataset among a demo run's step outputs.

    The pipeline's own ``export-onnx`` output is preferred (a run folder may hold other
    artifacts: the structured branch, a later experiment); the optimized graph and the
    student are then the ones linked to it by their content hashes.
    """
    from shrink.artifact import read_meta

    metas = {}
    for meta_file in sorted(run.rglob("shrink.json")):
        try:
            metas[meta_file.parent] = read_meta(meta_file.parent, verify=False)
        except Exception:  # noqa: BLE001 - a run folder holds other JSON artifacts too
            continue
    exports = [d for d, m in metas.items() if m.technique == "onnx-export" and "structured" not in str(d)]
    # The pipeline's main path: not a shape-search iteration (for-loop-*), in a task folder export-onnx[-N]
    # (kfp.local numbers a task name's second use, and the search's own export takes the plain name).
    exports.sort(
        key=lambda d: (
            _in_search(d),
            not any(p == "export-onnx" or p.startswith("export-onnx-") for p in d.parts),
            str(d),
        )
    )
    if not exports:
        raise SystemExit(f"error: {run}: no onnx-export artifact found in this run")
    found: dict[str, Path] = {"onnx": exports[0]}
    onnx_meta = metas[exports[0]]

    # Same content may sit in several folders: a search iteration's, a benchmark's calibrated copy (which
    # carries an oos rule, so it would not answer as the plain graph): the main path's own outputs first.
    def rank(item):
        return (_in_search(item[0]), "calibrated" in item[0].parts, str(item[0]))

    for directory, meta in sorted(metas.items(), key=rank):
        parent = (meta.parent or {}).get("content_hash")
        if meta.technique == "ort-optimize" and parent == onnx_meta.content_hash():
            found.setdefault("optimized", directory)
        if meta.format == "pytorch" and meta.content_hash() == (onnx_meta.parent or {}).get("content_hash"):
            found.setdefault("student", directory)
    dataset = sorted(run.rglob("shrink-data.json"), key=lambda f: ("prepare-data" not in f.parts, str(f)))
    if dataset:
        found["dataset"] = dataset[0].parent
    missing = [k for k in ("student", "onnx", "optimized") if k not in found]
    if missing:
        raise SystemExit(f"error: {run}: no {', '.join(missing)} artifact linked to {exports[0]}")
    return found


def main(argv: list[str] | None = None) -> int:
    """Quantize with each peer, build shrink's INT8, time and evaluate all of them in one process."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a demo run directory (.shrink/runs/<run-id>)")
    parser.add_argument("--student", type=Path, help="the student (PyTorch FP32 artifact)")
    parser.add_argument("--onnx", type=Path, help="its FP32 ONNX export (export_onnx's output)")
    parser.add_argument("--optimized", type=Path, help="its optimized graph (optimize_onnx's output)")
    parser.add_argument("--dataset", type=Path, help="a prepared dataset directory")
    parser.add_argument("--clinc", type=Path, default=ROOT.parent / "shared" / "data" / "clinc150")
    parser.add_argument("--config", type=Path, default=ROOT / "pipelines" / "configs" / "clinc150.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "peers")
    parser.add_argument("--queries", type=int, default=1200, help="timed batch-1 queries per model")
    parser.add_argument("--rounds", type=int, default=12, help="interleaved rounds the queries are split into")
    parser.add_argument("--max-examples", type=int, default=None, help="accuracy on the first N test texts")
    parser.add_argument("--rebuild", action="store_true", help="quantize again even where a result is there")
    parser.add_argument(
        "--also", action="append", default=[], metavar="NAME=DIR", help="another shrink ONNX artifact to time alongside"
    )
    args = parser.parse_args(argv)

    import random

    import numpy as np

    from shrink.artifact import model_files, read_meta
    from shrink.config import DataConfig, QuantizeConfig, load_yaml
    from shrink.data import load_prepared, prepare
    from shrink.logs import setup_logging
    from shrink.metrics import paired_difference
    from shrink.quantize import quantize_ort_dynamic

    setup_logging()
    # Absolute paths: the peers' scripts run in their own working directories.
    paths = find_in_run(args.run.resolve()) if args.run else {}
    paths |= {
        k: v.resolve() for k, v in (("student", args.student), ("onnx", args.onnx), ("optimized", args.optimized)) if v
    }
    missing = [k for k in ("student", "onnx", "optimized") if k not in paths]
    if missing:
        parser.error(f"give --run or all of --student, --onnx, --optimized (missing {', '.join(missing)})")
    out = args.out
    if args.rebuild:
        shutil.rmtree(out / "models", ignore_errors=True)
    models_dir = out / "models"
    models_dir.mkdir(parents=True, exist_ok=True)

    dataset = args.dataset or paths.pop("dataset", None)
    if dataset is None:
        dataset = out / "clinc150"
        if not (dataset / "shrink-data.json").is_file():
            prepare(DataConfig(source=str(args.clinc)), dataset)
    dd, _ = load_prepared(dataset)
    texts, labels = list(dd["test"]["text"]), np.asarray(dd["test"]["label"])
    val_texts, val_labels = list(dd["validation"]["text"]), np.asarray(dd["validation"]["label"])
    if args.max_examples:
        texts, labels = texts[: args.max_examples], labels[: args.max_examples]
        val_texts, val_labels = val_texts[: args.max_examples], val_labels[: args.max_examples]
    queries = random.Random(0).sample(list(dd["test"]["text"]), min(args.queries, len(dd["test"])))

    cfg = load_yaml(QuantizeConfig, args.config, section="quantize") if args.config.is_file() else QuantizeConfig()
    shrink_dir = models_dir / "shrink"
    if not (shrink_dir / "shrink.json").is_file():
        started = time.monotonic()
        quantize_ort_dynamic(paths["optimized"], shrink_dir, cfg, plain_dir=paths["onnx"])
        print(f"shrink: quantize step {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)

    optimum = run_peer(
        "optimum", OPTIMUM_SCRIPT, hf_student(paths["student"], models_dir / "student-hf"), models_dir / "optimum-run"
    )
    olive = run_peer("olive", OLIVE_SCRIPT, paths["onnx"] / "model.onnx", models_dir / "olive-run")
    dirs = {
        "shrink": shrink_dir,
        "optimum-onnx": seal_peer(
            Path(optimum["model"]), paths["student"], models_dir / "optimum", "optimum-ortquantizer"
        ),
        "olive": seal_peer(Path(olive["model"]), paths["student"], models_dir / "olive", "olive-dynamic"),
    }
    for item in args.also:
        name, _, directory = item.partition("=")
        dirs[name] = Path(directory)

    timing = time_side_by_side(dirs, queries, args.rounds)
    rows = {}
    fp32_accuracy, fp32_pred = accuracy(paths["optimized"], texts, labels)
    predictions, val_predictions = {}, {}
    for name, directory in dirs.items():
        meta = read_meta(directory)
        acc, pred = accuracy(directory, texts, labels)
        val_acc, val_predictions[name] = accuracy(directory, val_texts, val_labels)
        predictions[name] = pred
        rows[name] = {
            **timing[name],
            "accuracy": acc,
            "agreement_with_fp32": float(np.mean(np.asarray(pred) == np.asarray(fp32_pred))),
            "validation_accuracy": val_acc,
            "benchmark_accuracy": accuracy_as_benchmarked(directory, texts, labels),
            "size_mb": sum(model_files(directory, meta).values()) / 1e6,
            "ops": _ops(directory / meta.extra.get("model_file", "model.onnx")),
        }
        print(json.dumps({name: {k: v for k, v in rows[name].items() if k != "ops"}}), file=sys.stderr, flush=True)
    faster_peer = min(("optimum-onnx", "olive"), key=lambda n: rows[n]["p50_ms"])
    for name, row in rows.items():
        row["p50_ratio_to_faster_peer"] = row["p50_ms"] / rows[faster_peer]["p50_ms"]
        # Test accuracy against shrink's, text by text: is a gap of a few texts a difference at all?
        row["vs_shrink"] = paired_difference(labels, predictions[name], predictions["shrink"])
        row["vs_shrink_validation"] = paired_difference(val_labels, val_predictions[name], val_predictions["shrink"])

    shrink_meta = read_meta(shrink_dir)
    result = {
        "paths": {k: str(v) for k, v in paths.items()},
        "dataset": str(dataset),
        "queries": len(queries),
        "rounds": args.rounds,
        "test_examples": len(texts),
        "faster_peer": faster_peer,
        "fp32_accuracy": fp32_accuracy,
        "shrink_variant": shrink_meta.settings.get("variant"),
        "shrink_variants": shrink_meta.extra.get("variants"),
        "peer_versions": {"optimum": optimum.get("versions"), "olive": olive.get("versions")},
        "models": rows,
    }
    (out / "peers.json").write_text(json.dumps(result, indent=2, default=str))
    lines = [
        f"Batch 1, one thread, {len(queries)} CLINC150 test queries x {args.rounds} interleaved rounds; "
        f"accuracy on {len(texts)} test and {len(val_texts)} validation texts at batch 1 (FP32: {fp32_accuracy:.2%} "
        "test); agreement with the FP32 ONNX model's test predictions; x64: test accuracy as benchmarked. "
        "vs shrink: test (val.: validation) texts only this model gets right / only shrink's does, and the exact "
        "McNemar p-value of that split (below 0.05: the accuracies differ). "
        f"shrink's variant: {result['shrink_variant']}.",
        "",
        "| model | p50 ms | p95 ms | model p50 ms | p50 / faster peer | test acc. | vs shrink | agree FP32 | val acc. "
        "| vs shrink (val.) | x64 | MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        paired, paired_val = (
            "" if name == "shrink" else f"{v['a_only']} / {v['b_only']}, p = {v['p_value']:.2f}"
            for v in (r["vs_shrink"], r["vs_shrink_validation"])
        )
        lines.append(
            f"| {name} | {r['p50_ms']:.3f} | {r['p95_ms']:.3f} | {r['model_p50_ms']:.3f} | "
            f"{r['p50_ratio_to_faster_peer']:.3f} | {r['accuracy']:.2%} | {paired} | {r['agreement_with_fp32']:.2%} | "
            f"{r['validation_accuracy']:.2%} | {paired_val} | "
            f"{r['benchmark_accuracy']:.2%} | {r['size_mb']:.1f} |"
        )
    (out / "peers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _ops(path: Path) -> dict[str, int]:
    """Op counts of the graph ONNX Runtime actually runs (after its load-time fusions, level "all")."""
    import tempfile

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 3
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        counts: dict[str, int] = {}
        for node in onnx.load(opts.optimized_model_filepath, load_external_data=False).graph.node:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


if __name__ == "__main__":
    raise SystemExit(main())
