"""KFP component: publish the gate's chosen model to the registry and switch the production alias."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output


@dsl.component(base_image="shrink-promote", install_kfp_package=False)
def promote(
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
    pruned: Input[Model] = None,
    pruned_movement: Input[Model] = None,
    pruned_magnitude: Input[Model] = None,
    pruned_structured: Input[Model] = None,
    pruned_structured_int8: Input[Model] = None,
) -> str:
    """Upload the chosen candidate as a new registry version, verify it, then point ``production`` at it.

    Args:
        decision: The gate's decision record (JSON).
        gate: The ``gate`` section of the pipeline config (registry bucket, champion/challenger).
        model_name: Registry name: ``s3://<registry_bucket>/<model_name>/<version>/``.
        teacher: The teacher model (promoted only with ``gate.allow_teacher``). This and the
            following are the candidates' model artifacts under the names the gate used; only the
            chosen one is read, and unconnected ones are fine.
        student: The distilled student.
        torch_int8: PyTorch dynamic INT8 model.
        onnx_fp32: Exported ONNX model.
        onnx_optimized: ORT graph-optimized ONNX model.
        ort_int8_dynamic: ORT dynamic INT8 model.
        ort_int8_static: ORT static INT8 model.
        pruned: A pruned model (any method).
        pruned_movement: Movement-pruned model.
        pruned_magnitude: Magnitude-pruned model.
        pruned_structured: Structurally pruned model.
        pruned_structured_int8: Structurally pruned model as ONNX, graph-optimized, dynamic INT8.
        promoted: The new alias pointer (JSON), or ``{"promoted": false, ...}`` when nothing was chosen.

    Returns:
        The promoted version's S3 URI, or "" when the gate chose nothing.
    """
    import json
    from pathlib import Path

    from shrink.kfp_io import component_main
    from shrink.logs import log

    with component_main("promote"):
        from shrink.errors import ShrinkError
        from shrink.promote import promote as publish
        from shrink.slo import gate_config

        cfg = gate_config(gate, "gate")
        result = json.loads(Path(decision.path).read_text())
        models = {
            "teacher": teacher, "student": student, "torch_int8": torch_int8, "onnx_fp32": onnx_fp32,
            "onnx_optimized": onnx_optimized, "ort_int8_dynamic": ort_int8_dynamic,
            "ort_int8_static": ort_int8_static, "pruned": pruned, "pruned_movement": pruned_movement,
            "pruned_magnitude": pruned_magnitude, "pruned_structured": pruned_structured,
            "pruned_structured_int8": pruned_structured_int8,
        }
        chosen = result.get("chosen")
        out = Path(promoted.path)
        out.parent.mkdir(parents=True, exist_ok=True)
        if not chosen:
            production = (result.get("production") or {}).get("version")
            log.warning("promote: the gate chose no candidate (%s); production stays at %s",
                        result.get("reason"), production or "nothing")
            out.write_text(json.dumps({"promoted": False, "reason": result.get("reason"),
                                       "production": production}, indent=2))
            promoted.metadata.update({"promoted": False})
            return ""
        model = models.get(chosen)
        if model is None:
            raise ShrinkError(f"decision chose {chosen!r}, but no model artifact named {chosen!r} "
                              "was passed to promote")
        pointer = publish(model.path, result, cfg, model_name, cfg.registry_uri)
        out.write_text(json.dumps({"promoted": True, **pointer}, indent=2))
        promoted.metadata.update({
            "promoted": True, "candidate": chosen, "version": pointer["version"],
            "registry_uri": pointer["uri"], "content_hash": pointer["content_hash"],
            "unchanged": bool(pointer.get("unchanged")),
        })
        return pointer["uri"]
