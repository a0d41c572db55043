"""KFP component: publish the gate's chosen model to the registry and switch the production alias."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output


@dsl.component(base_image="shrink-promote", install_kfp_package=False)
def promote(  # noqa: D417 - the candidate inputs are described once, together
    decision: Input[Artifact],
    model_name: str,
    promoted: Output[Artifact],
    gate: dict = {},  # noqa: B006 - KFP publishes the default in the component spec
    teacher: Input[Model] = None,
    student: Input[Model] = None,
    torch_int8: Input[Model] = None,
    onnx_fp32: Input[Model] = None,
    onnx_optimized: Input[Model] = None,
    ort_int8_dynamic: Input[Model] = None,
    ort_int8_static: Input[Model] = None,
    pruned_movement: Input[Model] = None,
    pruned_magnitude: Input[Model] = None,
    pruned_structured: Input[Model] = None,
    pruned_structured_onnx: Input[Model] = None,
    pruned_structured_int8: Input[Model] = None,
    searched: Input[list[Model]] = None,
) -> str:
    """Upload the chosen candidate as a new registry version, verify it, then point ``production`` at it.

    Every other input is a candidate's model artifact, one per candidate in ``pipelines/steps.py``
    under the name the gate used; only the chosen one is read, and unconnected ones are fine (the
    teacher is promoted only with ``gate.allow_teacher``). ``searched`` is a list, one model per
    shape-search trial; the chosen one is found by the content hash the decision recorded.

    Args:
        decision: The gate's decision record (JSON).
        gate: The ``gate`` section of the pipeline config (registry bucket, champion/challenger).
        model_name: Registry name: ``s3://<registry_bucket>/<model_name>/<version>/``.
        promoted: The new alias pointer (JSON), or ``{"promoted": false, ...}`` when nothing was chosen.

    Returns:
        The promoted version's S3 URI, or "" when the gate chose nothing.
    """
    candidates = {k: v for k, v in locals().items() if k not in ("decision", "model_name", "promoted", "gate")}
    from shrink.kfp_io import component_main

    with component_main("promote"):
        from shrink.promote import promote_chosen
        from shrink.slo import gate_config

        result = promote_chosen(
            decision.path,
            {
                name: [x.path for x in m] if isinstance(m, list) else m.path
                for name, m in candidates.items()
                if m is not None
            },
            gate_config(gate, "gate"),
            model_name,
            promoted.path,
        )
        promoted.metadata.update(result.metadata)
        return result.uri
