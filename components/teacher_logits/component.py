"""KFP component: the teacher's logits on the training texts, computed once for every distillation trial."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output


@dsl.component(base_image="shrink-teacher-logits", install_kfp_package=False)
def teacher_logits(dataset: Input[Dataset], teacher: Input[Model], distill: dict, logits: Output[Dataset]):
    """Run the teacher once over train, validation and the transfer set; every distillation trial reads the result.

    Args:
        dataset: The prepared dataset.
        teacher: The teacher artifact.
        logits: ``teacher-logits.safetensors`` and ``teacher-logits.json`` (text fingerprints, teacher hash),
            plus ``transfer-texts.json`` when ``distill.augment.copies`` > 0.
        distill: The ``distill`` section of the pipeline config: its ``augment`` settings, and the student's
            layers when ``patient_weight`` > 0 (the teacher's [CLS] states are stored for them).
    """
    from shrink.config import DistillConfig, from_dict
    from shrink.kfp_io import component_main
    from shrink.teacher import compute_teacher_logits

    with component_main("teacher_logits"):
        cfg = from_dict(DistillConfig, distill, "distill")
        info = compute_teacher_logits(
            teacher.path,
            dataset.path,
            logits.path,
            augment=cfg.augment,
            patient_layers=list(cfg.student_layers) if cfg.patient_weight > 0 else None,
        )
        transfer = info["transfer"] or {"count": 0}
        logits.metadata.update(
            {
                "teacher_content_hash": info["teacher_content_hash"],
                "transfer_examples": transfer["count"],
                **{f"{split}_examples": s["count"] for split, s in info["splits"].items()},
                **{f"teacher_{split}_accuracy": s["teacher_accuracy"] for split, s in info["splits"].items()},
            }
        )
