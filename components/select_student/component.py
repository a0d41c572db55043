"""KFP component: the best student of the distillation search."""

from kfp import dsl
from kfp.dsl import Input, Metrics, Model, Output


@dsl.component(base_image="shrink-select-student", install_kfp_package=False)
def select_student(
    students: Input[list[Model]], best: Output[Model], metrics: Output[Metrics], tolerance: float = 0.0
) -> str:
    """Keep the trial with the highest validation accuracy (ties: the first) and publish every trial's result.

    Args:
        students: Every trial's student (``dsl.Collected`` over the search's ParallelFor).
        tolerance: ``distill.search.select_tolerance``: above 0, the shallowest student within that much
            validation accuracy of the best is kept instead.
        best: A copy of the chosen student artifact.
        metrics: Per trial ``trial<i>_val_accuracy`` / ``_alpha`` / ``_temperature`` / ``_learning_rate``,
            and the chosen trial's index and validation and test accuracy.

    Returns:
        A one-line summary of the choice.
    """
    from shrink.distill import select_best_student
    from shrink.kfp_io import component_main

    with component_main("select_student", metrics):
        choice = select_best_student([s.path for s in students], best.path, tolerance)
        for i, trial in enumerate(choice["trials"]):
            for key in ("val_accuracy", "num_layers", "alpha", "temperature", "learning_rate"):
                metrics.log_metric(f"trial{i}_{key}", trial[key])
        chosen = choice["trials"][choice["index"]]
        metrics.log_metric("best_trial", choice["index"])
        metrics.log_metric("best_val_accuracy", chosen["val_accuracy"])
        metrics.log_metric("best_test_accuracy", chosen["test_accuracy"])
        best.metadata.update(
            {
                "format": "pytorch",
                "precision": chosen["precision"],
                "technique": "distill",
                "content_hash": chosen["content_hash"],
                "val_accuracy": chosen["val_accuracy"],
                "trial": choice["index"],
            }
        )
        return choice["summary"]
