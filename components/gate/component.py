"""KFP component: judge every benchmarked candidate against the SLOs and choose at most one."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Metrics, Output


@dsl.component(base_image="shrink-gate", install_kfp_package=False)
def gate(
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
    pruned: Input[Artifact] = None,
    pruned_movement: Input[Artifact] = None,
    pruned_magnitude: Input[Artifact] = None,
    pruned_structured: Input[Artifact] = None,
    pruned_structured_int8: Input[Artifact] = None,
    production: Input[Artifact] = None,
    gate: dict = {},  # noqa: B006 - KFP publishes the default in the component spec
    model_name: str = "",
) -> str:
    """Decide which candidate may be promoted; write the decision record and the HTML report.

    Args:
        teacher: Benchmark result (``shrink.benchmark/v1`` JSON) of the teacher: the baseline.
        student: Benchmark result of the distilled student.
        torch_int8: Benchmark result of the PyTorch dynamic INT8 model (optional, like all below:
            candidates not produced in this run are left unconnected).
        onnx_fp32: Benchmark result of the exported ONNX model.
        onnx_optimized: Benchmark result of the ORT graph-optimized ONNX model.
        ort_int8_dynamic: Benchmark result of the ORT dynamic INT8 model.
        ort_int8_static: Benchmark result of the ORT static (calibrated) INT8 model.
        pruned: Benchmark result of a pruned model (any method).
        pruned_movement: Benchmark result of the movement-pruned model.
        pruned_magnitude: Benchmark result of the magnitude-pruned model.
        pruned_structured: Benchmark result of the structurally pruned model.
        pruned_structured_int8: Benchmark result of the structurally pruned model, ONNX, optimized, INT8.
        production: The production model's benchmark result from this run (the benchmark_production
            step): the champion's baseline for the production goals, not a candidate. Unconnected or
            absent: the record stored at its promotion is used.
        gate: The ``gate`` section of the pipeline config (SLOs, policy, collapse limit, registry).
        model_name: Registry name, to compare with the current production model (overrides
            ``gate.model_name``).
        decision: The decision record (JSON): every SLO per candidate, the chosen one and why.
        report: Self-contained HTML page with the candidate table and the latency/accuracy plot.
        metrics: Number of candidates and passing ones; the chosen candidate's figures.

    Returns:
        The chosen candidate's name, or "" when no candidate meets every SLO.
    """
    import json
    from pathlib import Path

    from shrink.kfp_io import component_main
    from shrink.logs import log

    with component_main("gate", metrics):
        from shrink.errors import ShrinkError
        from shrink.gate import decide
        from shrink.promote import current_production
        from shrink.report import format_table, write_report
        from shrink.slo import gate_config

        cfg = gate_config(gate, "gate")
        inputs = {
            "teacher": teacher, "student": student, "torch_int8": torch_int8, "onnx_fp32": onnx_fp32,
            "onnx_optimized": onnx_optimized, "ort_int8_dynamic": ort_int8_dynamic,
            "ort_int8_static": ort_int8_static, "pruned": pruned, "pruned_movement": pruned_movement,
            "pruned_magnitude": pruned_magnitude, "pruned_structured": pruned_structured,
            "pruned_structured_int8": pruned_structured_int8,
        }

        def read(name: str, artifact) -> dict:
            path = Path(artifact.path)
            if path.is_dir():
                path = path / "benchmark.json"
            try:
                record = json.loads(path.read_text())
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError) as exc:
                # An unreadable result must not stop the gate: that candidate is just not promotable (an
                # unreadable champion record: the decision says so and the stored record is used).
                return {"candidate": name, "error": f"{path}: benchmark result unreadable: {exc}"}
            if record.get("candidate") not in (None, name):
                return {"candidate": name, "error": f"{path}: result is for {record.get('candidate')!r}, "
                                                   f"wired as {name!r}"}
            record.setdefault("candidate", name)
            return record

        records = [read(name, artifact) for name, artifact in inputs.items() if artifact is not None]

        pointer = None
        name = model_name or cfg.model_name
        if cfg.compare_to_production:
            if not name:
                raise ShrinkError("gate.model_name: needed to compare with the production model "
                                  "(or set gate.compare_to_production: false)")
            pointer = current_production(name, cfg.registry_uri)
            log.info("production: %s", pointer["version"] if pointer else "none yet")
        champion = read("production", production) if production is not None else None
        result = decide(records, cfg, pointer, champion)
        Path(decision.path).parent.mkdir(parents=True, exist_ok=True)
        Path(decision.path).write_text(json.dumps(result, indent=2))
        write_report(result, records, report.path)
        for line in format_table(result).splitlines():
            log.info("%s", line)

        chosen = result["chosen"] or ""
        passing = [c["name"] for c in result["candidates"] if c["status"] == "pass" and c["eligible"]]
        decision.metadata.update({"chosen": chosen, "passing": passing, "policy": cfg.policy,
                                  "closest": (result["closest"] or {}).get("name", "")})
        metrics.log_metric("candidates", len(records))
        metrics.log_metric("passing", len(passing))
        if chosen:
            summary = next(c for c in result["candidates"] if c["name"] == chosen)["summary"]
            for key in ("accuracy", "p50_ms", "p95_ms", "size_mb", "speedup_p50", "size_reduction"):
                if summary.get(key) is not None:
                    metrics.log_metric(f"chosen_{key}", float(summary[key]))
        return chosen
