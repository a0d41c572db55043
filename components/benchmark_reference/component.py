"""KFP component: time BERT-base's architecture (random weights) in this run: the reference row."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output


@dsl.component(base_image="shrink-benchmark-reference", install_kfp_package=False)
def benchmark_reference(
    teacher: Input[Model], dataset: Input[Dataset], benchmark: dict, result: Output[Artifact], metrics: Output[Metrics]
):
    """Time ``benchmark.reference`` (default BERT-base) as the candidates are timed, so ratios come from one run.

    Args:
        teacher: The teacher artifact: its tokenizer and labels are the reference's (weights are random).
        dataset: The prepared dataset (its ``test`` queries are the timed requests).
        benchmark: The ``benchmark`` section of the pipeline config (``reference``, ``reference_samples``).
        result: The ``shrink.reference/v1`` record: batch-1 latency, size, memory, hardware.
        metrics: Its p50/p95 (ms) and size (MB) for the KFP UI.
    """
    from pathlib import Path

    from shrink.files import write_json
    from shrink.kfp_io import component_main

    with component_main("benchmark_reference", metrics):
        from shrink.config import BenchmarkConfig, from_dict
        from shrink.reference import measure_reference

        cfg = from_dict(BenchmarkConfig, benchmark, "benchmark")
        if cfg.reference is None:
            record = {"candidate": "reference", "absent": "benchmark.reference is null"}
        else:
            record = measure_reference(cfg.reference, teacher.path, dataset.path, cfg)
            metrics.log_metric("reference_p50_ms", record["latency_ms"]["p50"])
            metrics.log_metric("reference_p95_ms", record["latency_ms"]["p95"])
            metrics.log_metric("reference_size_mb", record["size"]["model_mb"])
        Path(result.path).parent.mkdir(parents=True, exist_ok=True)
        write_json(result.path, record)
        result.metadata.update({"schema": record.get("schema", ""), "architecture": cfg.reference or ""})
