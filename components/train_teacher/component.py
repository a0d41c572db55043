"""KFP component: the teacher, fine-tuned here or imported already fine-tuned."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output


@dsl.component(base_image="shrink-train-teacher", install_kfp_package=False)
def train_teacher(dataset: Input[Dataset], teacher: dict, model: Output[Model], metrics: Output[Metrics]):
    """Fine-tune ``teacher.base_model`` on the dataset, or import ``teacher.checkpoint`` (labels checked).

    Args:
        dataset: The prepared dataset (train/validation/test).
        teacher: The ``teacher`` section of the pipeline config (base_model or checkpoint, train settings).
        model: The teacher as a shrink artifact (PyTorch FP32), technique ``fine-tune`` or ``import``.
        metrics: Validation and test accuracy, and the training time.
    """
    from shrink.config import TeacherConfig, from_dict
    from shrink.kfp_io import component_main
    from shrink.teacher import train_teacher as run

    with component_main("train_teacher", metrics):
        meta = run(from_dict(TeacherConfig, teacher, "teacher"), dataset.path, model.path)
        model.metadata.update(
            {
                "format": meta.format,
                "precision": meta.precision,
                "technique": meta.technique,
                "content_hash": meta.content_hash(),
                "val_accuracy": meta.metrics["val_accuracy"],
                "test_accuracy": meta.metrics["test_accuracy"],
            }
        )
        for key in ("val_accuracy", "test_accuracy", "train_seconds"):
            if key in meta.metrics:
                metrics.log_metric(key, meta.metrics[key])
