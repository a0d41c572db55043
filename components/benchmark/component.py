"""KFP component: measure one candidate model (accuracy, latency, throughput, size, memory, cost)."""

from kfp import dsl
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output


@dsl.component(base_image="shrink-benchmark", install_kfp_package=False)
def benchmark(
    model: Input[Model],
    dataset: Input[Dataset],
    benchmark: dict,
    candidate: str,
    result: Output[Artifact],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    trial: dict = {},  # noqa: B006 - KFP publishes the default in the component spec
):
    """Benchmark a shrink model artifact on the test split; the gate decides on the JSON result.

    Timing runs in a fresh worker process with fixed threads; run this step on the
    production CPU type, one candidate at a time, with whole, guaranteed CPUs.

    Args:
        model: A shrink artifact directory in any format the pipeline produces.
        dataset: The prepared dataset (its ``test`` split is measured).
        benchmark: The ``benchmark`` section of the pipeline config.
        candidate: The candidate's name in the pipeline (``student``, ``ort_int8_dynamic`` ...).
        trial: The shape-search trial this candidate comes from, or empty; its label then ends the
            recorded name (``searched@L2-a0.5-T2-lr0.0002``), so every trial's record is told apart.
        result: The ``shrink.benchmark/v1`` JSON record (a file).
        metrics: Flat figures for the KFP UI (accuracy, p50_ms, p95_ms, size_mb, qps_b8 ...).
        confusion: The test-split confusion matrix.
    """
    from shrink.benchmark import measure
    from shrink.config import BenchmarkConfig, from_dict
    from shrink.kfp_io import component_main
    from shrink.record import flat_metrics, write_record

    with component_main("benchmark", metrics, confusion):
        cfg = from_dict(BenchmarkConfig, benchmark, "benchmark")
        if trial:
            from shrink.config import trial_label

            candidate = f"{candidate}@{trial_label(trial)}"
        run = measure(model.path, dataset.path, cfg, candidate, model_uri=model.uri)
        record = run.record
        # Published only once everything is measured: a failed benchmark leaves no partial figures.
        write_record(record, result.path)
        for name, value in flat_metrics(record).items():
            metrics.log_metric(name, value)
        confusion.log_confusion_matrix(run.label_names, run.confusion)
        result.metadata.update(
            {
                "schema": record["schema"],
                "candidate": candidate,
                "content_hash": record["artifact"]["content_hash"],
                "format": record["artifact"]["format"],
                "precision": record["artifact"]["precision"],
                "accuracy": record["accuracy"]["accuracy"],
                "p50_ms": record["latency_ms"]["p50"],
                "p95_ms": record["latency_ms"]["p95"],
                "size_mb": record["size"]["model_mb"],
                "peak_rss_mb": record["memory"]["peak_rss_mb"],
                "hardware_fingerprint": record["hardware"]["fingerprint"],
            }
        )
