"""INT8 and ONNX Runtime variants of one classifier: size, accuracy and agreement with FP32 on a full test split.

Not CI (for ``make bench``): every variant of the given PyTorch classifier
artifact is produced with the library calls the pipeline's components make,
then run through ``shrink.runtime.open_classifier`` on the whole test split:

- PyTorch FP32 (the input), PyTorch dynamic INT8 (Linear only, as stock
  ``quantize_dynamic``; and Linear + embeddings, the shipped default);
- ONNX FP32 (export) and ONNX optimized (fused);
- ORT dynamic INT8 of the optimized graph and of the plain export, with the
  MatMulInteger kernel (per-tensor and per-channel weights) and the MatMulNBits
  kernel, each as ORT fuses it (SkipLayerNormalization) and, on the optimized graph,
  with the LayerNorms split (Sum + LayerNormalization); the step's own search
  (``ort-dyn-auto``, what the pipeline ships); ORT static INT8 (QDQ) of the plain
  export (LayerNorms split, the default, and not) and of the optimized graph.

Columns: weight-file size (MB) and compression against the PyTorch FP32 file,
accuracy, argmax agreement with PyTorch FP32, max abs logit difference.
Latency belongs to the benchmark component (``shrink.benchmark``);
``--latency N`` adds a batch-1 p50 from it with N requests on one thread.

    .venv/bin/python bench/quantize.py --model ARTIFACT [--dataset D | --clinc ../shared/data/clinc150]
        [--out results/quantize] [--config pipelines/configs/clinc150.yaml] [--max-examples N] [--latency N]

Results go to ``<out>/quantize-bench.json`` and ``<out>/quantize-bench.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def variants(model: Path, out: Path, cfg, parity: list[str], calibration: list[str]) -> dict[str, Path]:
    """Produce every variant under ``out`` (reused when already there); name -> artifact directory."""
    from shrink.onnx_export import export_onnx, optimize_onnx
    from shrink.quantize import quantize_ort_dynamic, quantize_ort_static, quantize_torch_dynamic

    def dyn(kernel: str, per_channel: bool, layernorm: str):
        """One explicit ORT dynamic variant: the step's search restricted to it (nothing timed)."""
        return replace(
            cfg, matmul_kernel=kernel, per_channel=per_channel, search=replace(cfg.search, layernorm=[layernorm])
        )

    tensor, channel, nbits = dyn("integer", False, "skip"), dyn("integer", True, "skip"), dyn("nbits", True, "skip")
    opt, plain = out / "onnx-optimized", out / "onnx-fp32"
    static_skip = replace(cfg, per_channel=True, search=replace(cfg.search, layernorm=["skip"]))
    steps = [
        ("torch-int8-linear-only", lambda o: quantize_torch_dynamic(model, o, replace(cfg, quantize_embeddings=False))),
        ("torch-int8", lambda o: quantize_torch_dynamic(model, o, cfg)),
        ("onnx-fp32", lambda o: export_onnx(model, o, cfg, parity)),
        ("onnx-optimized", lambda o: optimize_onnx(plain, o, cfg)),
        ("ort-dyn-optimized-integer-per-tensor", lambda o: quantize_ort_dynamic(opt, o, tensor)),
        ("ort-dyn-optimized-integer-per-channel", lambda o: quantize_ort_dynamic(opt, o, channel)),
        ("ort-dyn-plain-integer-per-channel", lambda o: quantize_ort_dynamic(plain, o, channel)),
        ("ort-dyn-optimized-nbits", lambda o: quantize_ort_dynamic(opt, o, nbits)),
        ("ort-dyn-plain-nbits", lambda o: quantize_ort_dynamic(plain, o, nbits)),
        # The same with the residual LayerNorms as Sum + LayerNormalization (shrink.quantize.split_layernorm).
        (
            "ort-dyn-optimized-integer-per-tensor-split",
            lambda o: quantize_ort_dynamic(opt, o, dyn("integer", False, "split")),
        ),
        (
            "ort-dyn-optimized-integer-per-channel-split",
            lambda o: quantize_ort_dynamic(opt, o, dyn("integer", True, "split")),
        ),
        ("ort-dyn-optimized-nbits-split", lambda o: quantize_ort_dynamic(opt, o, dyn("nbits", True, "split"))),
        # What the pipeline ships: the step's search (config defaults), the plain export offered too.
        ("ort-dyn-auto", lambda o: quantize_ort_dynamic(opt, o, cfg, plain_dir=plain)),
        ("ort-static-plain-per-channel-skip", lambda o: quantize_ort_static(plain, o, static_skip, calibration)),
        (
            "ort-static-plain-per-channel",
            lambda o: quantize_ort_static(plain, o, replace(cfg, per_channel=True), calibration),
        ),
        (
            "ort-static-optimized-per-channel",
            lambda o: quantize_ort_static(opt, o, replace(cfg, per_channel=True), calibration),
        ),
    ]
    made = {"pytorch-fp32": model}
    for name, make in steps:
        target = out / name
        if not (target / "shrink.json").is_file():
            started = time.monotonic()
            make(target)
            print(f"built {name} in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
        made[name] = target
    return made


def evaluate(directory: Path, texts: list[str], labels, reference=None) -> dict:
    """Accuracy, agreement and logit difference against the FP32 reference logits, through the runtime."""
    import numpy as np

    from shrink.artifact import model_files, read_meta
    from shrink.runtime import open_classifier

    meta = read_meta(directory)
    pred, logits = open_classifier(directory).predict_all(texts, batch_size=64)
    row = {
        "technique": meta.technique,
        "precision": meta.precision,
        "size_mb": sum(model_files(directory, meta).values()) / 1e6,
        "accuracy": float((pred == labels).mean()),
        "logits": logits,
    }
    if reference is not None:
        row["agreement"] = float((pred == reference.argmax(-1)).mean())
        row["max_abs_diff"] = float(np.abs(logits - reference).max())
    return row


def main(argv: list[str] | None = None) -> int:
    """Build the variants, evaluate each on the test split, write JSON and a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="a PyTorch FP32 classifier artifact")
    parser.add_argument("--dataset", type=Path, help="a prepared dataset directory")
    parser.add_argument("--clinc", type=Path, default=ROOT.parent / "shared" / "data" / "clinc150")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "quantize")
    parser.add_argument("--config", type=Path, default=ROOT / "pipelines" / "configs" / "clinc150.yaml")
    parser.add_argument("--max-examples", type=int, default=None, help="evaluate on the first N test texts")
    parser.add_argument("--latency", type=int, default=0, help="batch-1 requests per variant (0: skip latency)")
    args = parser.parse_args(argv)

    import numpy as np

    from shrink.config import DataConfig, QuantizeConfig, load_yaml, to_dict
    from shrink.data import load_prepared, prepare
    from shrink.logs import setup_logging
    from shrink.onnx_export import parity_texts
    from shrink.quantize import calibration_texts

    setup_logging()
    args.out.mkdir(parents=True, exist_ok=True)
    dataset = args.dataset
    if dataset is None:
        dataset = args.out / "clinc150"
        if not (dataset / "shrink-data.json").is_file():
            prepare(DataConfig(source=str(args.clinc)), dataset)
    cfg = load_yaml(QuantizeConfig, args.config, section="quantize") if args.config.is_file() else QuantizeConfig()
    dd, _ = load_prepared(dataset)
    texts, labels = list(dd["test"]["text"]), np.asarray(dd["test"]["label"])
    if args.max_examples:
        texts, labels = texts[: args.max_examples], labels[: args.max_examples]
    made = variants(
        args.model,
        args.out / "variants",
        cfg,
        parity_texts(dataset, cfg.parity_samples),
        calibration_texts(dataset, cfg.calibration_samples),
    )

    fp32 = evaluate(made["pytorch-fp32"], texts, labels)
    rows = {}
    for name, directory in made.items():
        row = fp32 if name == "pytorch-fp32" else evaluate(directory, texts, labels, fp32["logits"])
        row = {k: v for k, v in row.items() if k != "logits"}
        row["compression"] = fp32["size_mb"] / row["size_mb"]
        if args.latency:
            from shrink.benchmark import run_benchmark
            from shrink.config import BenchmarkConfig

            bench = BenchmarkConfig(
                warmup=min(50, args.latency),
                latency_samples=args.latency,
                batch_sizes=[8],
                throughput_queries=64,
                max_eval_examples=64,
                intra_op_threads=1,
            )
            record = run_benchmark(directory, dataset, bench, name)
            row["p50_ms"] = record["latency_ms"]["p50"]
        rows[name] = row
        print(json.dumps({name: row}), flush=True)

    result = {
        "model": str(args.model),
        "dataset": str(dataset),
        "examples": len(texts),
        "config": to_dict(cfg),
        "variants": rows,
    }
    (args.out / "quantize-bench.json").write_text(json.dumps(result, indent=2))
    head = "| variant | MB | x smaller | accuracy | agreement | max abs diff |" + (" p50 ms |" if args.latency else "")
    lines = [f"Test examples: {len(texts)}", "", head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in rows.items():
        line = (
            f"| {name} | {r['size_mb']:.1f} | {r['compression']:.2f} | {r['accuracy']:.4f} | "
            f"{r.get('agreement', 1.0):.4f} | {r.get('max_abs_diff', 0.0):.3f} |"
        )
        if args.latency:
            line += f" {r['p50_ms']:.2f} |"
        lines.append(line)
    (args.out / "quantize-bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
