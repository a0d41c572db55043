"""The shape search outside the DAG: distil students of several depths from one run's teacher, measure each.

The pipeline's own shape search (``distill.search.depth`` in ``pipelines/configs/clinc150-bench.yaml``,
run by ``make bench``) trains every depth inside its ParallelFor and lets the gate choose. This
script does the same on the artifacts of a finished run (its prepared dataset, teacher and teacher
logits), so one depth can be added or re-measured without re-running the pipeline:

    python bench/shapes.py --run .shrink/runs/<run-id> --depth 2 3 4 [--config pipelines/configs/clinc150.yaml]

Each depth goes through the same library calls the pipeline's steps make (distill, export_onnx,
optimize_onnx, quantize_ort_dynamic, benchmark.measure) and the table shows validation and test
accuracy, p50/p95 and size of its INT8 model. Outputs go to ``<run>/shapes/L<depth>/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _find(run: Path, task: str, output: str) -> Path:
    """The output folder of ``task`` in a kfp.local run directory."""
    hits = sorted(run.glob(f"*/{task}/{output}")) + sorted(run.glob(f"*/*/{task}/{output}"))
    if not hits:
        raise SystemExit(f"error: {run}: no {task}/{output} (is it a finished run's folder?)")
    return hits[0]


def main(argv: list[str] | None = None) -> int:
    """Distil, export, quantize and benchmark each depth; print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="a finished kfp.local run: .shrink/runs/<run-id>")
    p.add_argument("--depth", type=int, nargs="+", required=True)
    p.add_argument("--config", type=Path, default=ROOT / "pipelines" / "configs" / "clinc150.yaml")
    args = p.parse_args(argv)

    from shrink.artifact import read_meta
    from shrink.benchmark import measure
    from shrink.config import load_pipeline_config
    from shrink.distill import distill
    from shrink.logs import setup_logging
    from shrink.onnx_export import export_onnx, optimize_onnx, parity_texts
    from shrink.quantize import quantize_ort_dynamic

    setup_logging()
    cfg = load_pipeline_config(args.config)
    dataset = _find(args.run, "prepare-data", "dataset")
    teacher = _find(args.run, "train-teacher", "model")
    logits = _find(args.run, "teacher-logits", "logits")
    trial = cfg.distill.search.trials()[0]
    rows = []
    for depth in args.depth:
        out = args.run / "shapes" / f"L{depth}"
        student = out / "student"
        if not (student / "shrink.json").is_file():
            distill(
                cfg.distill,
                dataset,
                teacher,
                logits,
                student,
                trial["alpha"],
                trial["temperature"],
                trial["learning_rate"],
                depth,
            )
        texts = parity_texts(dataset, cfg.quantize.parity_samples)
        export_onnx(student, out / "onnx", cfg.quantize, texts)
        optimize_onnx(out / "onnx", out / "optimized", cfg.quantize)
        quantize_ort_dynamic(out / "optimized", out / "int8", cfg.quantize)
        rec = measure(out / "int8", dataset, cfg.benchmark, f"L{depth}").record
        val = read_meta(student).metrics["val_accuracy"]
        rows.append(
            (
                depth,
                val,
                rec["accuracy"]["accuracy"],
                rec["latency_ms"]["p50"],
                rec["latency_ms"]["p95"],
                rec["size"]["model_mb"],
            )
        )
    print("\n| depth | val accuracy | test accuracy (INT8) | p50 ms | p95 ms | size MB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for depth, val, acc, p50, p95, size in rows:
        print(f"| {depth} | {100 * val:.2f}% | {100 * acc:.2f}% | {p50:.3f} | {p95:.3f} | {size:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
