"""KFP component: judge every benchmarked candidate against the SLOs and choose at most one."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Metrics, Output


@dsl.component(base_image="shrink-gate", install_kfp_package=False)
def gate(  # noqa: D417 - the candidate inputs are described once, together
    teacher: Input[Artifact],
    student: Input[Artifact],
    decision: Output[Artifact],
    report: Output[HTML],
    metrics: Output[Metrics],
    torch_int8: Input[Artifact] = None,
    onnx_fp32: Input[Artifact] = None,
    onnx_optimized: Input[Artifact] = None,
    ort_int8_dynamic: Input[Artifact] = None,
    ort_int8_static: Input[Artifact] = None,
    pruned_movement: Input[Artifact] = None,
    pruned_magnitude: Input[Artifact] = None,
    pruned_structured: Input[Artifact] = None,
    pruned_structured_onnx: Input[Artifact] = None,
    pruned_structured_int8: Input[Artifact] = None,
    searched: Input[list[Artifact]] = None,
    production: Input[Artifact] = None,
    reference: Input[Artifact] = None,
    gate: dict = {},  # noqa: B006 - KFP publishes the default in the component spec
    model_name: str = "",
) -> str:
    """Decide which candidate may be promoted; write the decision record and the HTML report.

    Every other input is a candidate's benchmark result (``shrink.benchmark/v1`` JSON), one per
    candidate in ``pipelines/steps.py`` and named after it; ``teacher`` is the baseline. Candidates
    not produced in this run are left unconnected; ``searched`` is a list, one result per shape-search
    trial.

    Args:
        production: The production model's benchmark result from this run (the benchmark_production
            step): the champion's baseline for the production goals, not a candidate. Unconnected or
            absent: the record stored at its promotion is used.
        reference: The reference architecture's record from this run (the benchmark_reference step):
            the baseline of ``baseline: reference`` goals and the report's reference row, not a candidate.
        gate: The ``gate`` section of the pipeline config (SLOs, policy, collapse limit, registry).
        model_name: Registry name, to compare with the current production model (overrides
            ``gate.model_name``).
        decision: The decision record (JSON): every SLO per candidate, the chosen one and why.
        report: Self-contained HTML page with the candidate table and the latency/accuracy plot.
        metrics: Number of candidates and passing ones; the chosen candidate's figures.

    Returns:
        The chosen candidate's name, or "" when no candidate meets every SLO.
    """
    candidates = {
        k: v
        for k, v in locals().items()
        if k not in ("decision", "report", "metrics", "production", "reference", "gate", "model_name")
    }
    from shrink.kfp_io import component_main

    with component_main("gate", metrics):
        from shrink.gate import run_gate
        from shrink.slo import gate_config

        result = run_gate(
            {
                name: [x.path for x in a] if isinstance(a, list) else a.path
                for name, a in candidates.items()
                if a is not None
            },
            production.path if production is not None else None,
            gate_config(gate, "gate"),
            model_name,
            decision.path,
            report.path,
            reference.path if reference is not None else None,
        )
        decision.metadata.update(result.metadata)
        for key, value in result.metrics.items():
            metrics.log_metric(key, value)
        return result.chosen
