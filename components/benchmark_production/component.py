"""KFP component: fetch the model behind the production alias and benchmark it in this run (the champion)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Output


@dsl.component(base_image="shrink-benchmark-production", install_kfp_package=False)
def benchmark_production(
    dataset: Input[Dataset],
    benchmark: dict,
    result: Output[Artifact],
    metrics: Output[Metrics],
    gate: dict = {},  # noqa: B006 - KFP publishes the default in the component spec
    model_name: str = "",
):
    """Re-measure the production model exactly as the candidates are measured, for champion/challenger.

    Args:
        dataset: The prepared dataset (its ``test`` split is measured).
        benchmark: The ``benchmark`` section of the pipeline config.
        gate: The ``gate`` section (registry bucket, ``compare_to_production``).
        model_name: Registry name (overrides ``gate.model_name``).
        result: The champion's ``shrink.benchmark/v1`` record (candidate ``production``), or
            ``{"candidate": "production", "absent": why}`` when nothing is in production or the gate
            does not compare with it.
        metrics: The champion's flat figures for the KFP UI (none when absent).
    """
    import tempfile
    from pathlib import Path

    from shrink.kfp_io import component_main

    with component_main("benchmark_production", metrics):
        from shrink.champion import CANDIDATE, measure_production
        from shrink.config import BenchmarkConfig, from_dict
        from shrink.record import flat_metrics, write_record
        from shrink.slo import gate_config

        cfg = gate_config(gate, "gate")
        name = model_name or cfg.model_name
        if not cfg.compare_to_production or not name:
            record = {"candidate": CANDIDATE, "absent": "gate.compare_to_production is off or no model_name"}
        else:
            with tempfile.TemporaryDirectory(prefix="shrink-champion-") as tmp:
                record = measure_production(
                    name,
                    cfg.registry_uri,
                    dataset.path,
                    from_dict(BenchmarkConfig, benchmark, "benchmark"),
                    Path(tmp) / "model",
                )
        write_record(record, result.path)
        result.metadata.update({"candidate": CANDIDATE, "absent": record.get("absent", "")})
        if not record.get("absent"):
            result.metadata.update(
                {"version": record["production"]["version"], "content_hash": record["artifact"]["content_hash"]}
            )
            for key, value in flat_metrics(record).items():
                metrics.log_metric(key, value)
