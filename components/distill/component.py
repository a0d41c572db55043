"""KFP component: one distillation trial (one alpha, temperature and learning rate)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output


@dsl.component(base_image="shrink-distill", install_kfp_package=False)
def distill(
    dataset: Input[Dataset],
    teacher: Input[Model],
    logits: Input[Dataset],
    distill: dict,
    trial: dict,
    student: Output[Model],
    metrics: Output[Metrics],
):
    """Train a student from the teacher's precomputed logits and the labels.

    Args:
        dataset: The prepared dataset.
        teacher: The teacher artifact (the student starts from its kept layers).
        logits: The teacher's logits from the teacher_logits step.
        distill: The ``distill`` section of the pipeline config (student layers or checkpoint, training).
        trial: One search trial: ``{"alpha", "temperature", "learning_rate"}``, and ``depth`` in a shape
            search (that many of the teacher's layers, spread evenly, replace ``distill.student_layers``).
        student: The student as a shrink artifact (PyTorch FP32), parent = the teacher.
        metrics: Validation and test accuracy, training time and the trial's settings.
    """
    from shrink.config import DistillConfig, from_dict, parse_trial, trial_depth
    from shrink.distill import distill as run
    from shrink.kfp_io import component_main

    with component_main("distill", metrics):
        cfg = from_dict(DistillConfig, distill, "distill")
        alpha, temperature, lr = parse_trial(trial)
        depth = trial_depth(trial)
        meta = run(cfg, dataset.path, teacher.path, logits.path, student.path, alpha, temperature, lr, depth)
        student.metadata.update(
            {
                "format": meta.format,
                "precision": meta.precision,
                "technique": meta.technique,
                "content_hash": meta.content_hash(),
                "val_accuracy": meta.metrics["val_accuracy"],
                "alpha": alpha,
                "temperature": temperature,
                "learning_rate": lr,
                "num_layers": meta.metrics["num_layers"],
            }
        )
        for key in (
            "val_accuracy",
            "test_accuracy",
            "train_seconds",
            "alpha",
            "temperature",
            "learning_rate",
            "num_layers",
        ):
            metrics.log_metric(key, meta.metrics[key])
