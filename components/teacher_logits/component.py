"""KFP component: the teacher's logits on the training texts, computed once for every distillation trial."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output


@dsl.component(base_image="shrink-teacher-logits", install_kfp_package=False)
def teacher_logits(dataset: Input[Dataset], teacher: Input[Model], logits: Output[Dataset]):
    """Run the teacher once over train and validation; every trial of the search reads the result.

    Args:
        dataset: The prepared dataset.
        teacher: The teacher artifact.
        logits: ``teacher-logits.safetensors`` and ``teacher-logits.json`` (text fingerprints, teacher hash).
    """
    from shrink.distill import compute_teacher_logits
    from shrink.logs import component_main

    with component_main("teacher_logits"):
        info = compute_teacher_logits(teacher.path, dataset.path, logits.path)
        logits.metadata.update(
            {
                "teacher_content_hash": info["teacher_content_hash"],
                **{f"{split}_examples": s["count"] for split, s in info["splits"].items()},
                **{f"teacher_{split}_accuracy": s["teacher_accuracy"] for split, s in info["splits"].items()},
            }
        )
