"""KFP component: measure one candidate model (accuracy, latency, throughput, size, memory, cost)."""

from kfp import dsl
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output


@dsl.component(base_image="shrink-benchmark", install_kfp_package=False)
def benchmark(
    model: Input[Model],
    dataset: Input[Dataset],
    benchmark: dict,
    candidate: str,
    oos: dict,
    result: Output[Artifact],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    calibrated: Output[Model],
    trial: dict = {},  # noqa: B006 - KFP publishes the default in the component spec
):
    """Fit the model's out-of-scope rule on the validation split, then benchmark it on the test split.

    The gate decides on the JSON result, and promote takes ``calibrated``: the artifact
    measured is the artifact promoted. Timing runs in a fresh worker process with fixed
    threads; run this step on the production CPU type, one candidate at a time, with
    whole, guaranteed CPUs.

    Args:
        model: A shrink artifact directory in any format the pipeline produces.
        dataset: The prepared dataset (its ``test`` split is measured).
        benchmark: The ``benchmark`` section of the pipeline config.
        candidate: The candidate's name in the pipeline (``student``, ``ort_int8_dynamic`` ...).
        oos: The ``oos`` section of the pipeline config (rejection rule, label, expected oos share).
        trial: The shape-search trial this candidate comes from, or empty; its label then ends the
            recorded name (``searched@L2-a0.5-T2-lr0.0002``), so every trial's record is told apart.
        result: The ``shrink.benchmark/v1`` JSON record (a file).
        metrics: Flat figures for the KFP UI (accuracy, p50_ms, p95_ms, size_mb, qps_b8 ...).
        confusion: The test-split confusion matrix.
        calibrated: ``model`` with its fitted out-of-scope rule in ``shrink.json`` (the same files and
            content hash); a copy without any rule when the rule is off for these labels.
    """
    from shrink.benchmark import measure
    from shrink.calibration import calibrate
    from shrink.config import BenchmarkConfig, OosConfig, from_dict
    from shrink.kfp_io import component_main
    from shrink.record import flat_metrics, oos_rule_text, write_record

    with component_main("benchmark", metrics, confusion):
        cfg = from_dict(BenchmarkConfig, benchmark, "benchmark")
        if trial:
            from shrink.config import trial_label

            candidate = f"{candidate}@{trial_label(trial)}"
        oos_cfg = from_dict(OosConfig, oos, "oos")
        calibrate(model.path, dataset.path, calibrated.path, oos_cfg, cfg.intra_op_threads, cfg.eval_batch_size, "oos")
        run = measure(calibrated.path, dataset.path, cfg, candidate, model_uri=calibrated.uri)
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
                "oos_rule": oos_rule_text(record) or "off",
            }
        )
        artifact = record["artifact"]
        calibrated.metadata.update(
            {k: artifact[k] for k in ("format", "precision", "technique", "content_hash")}
            | {"oos_rule": oos_rule_text(record) or "off"}
        )
