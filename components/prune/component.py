"""KFP component: magnitude or movement pruning of the student, distilled from the teacher."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output


@dsl.component(base_image="shrink-prune", install_kfp_package=False)
def prune(
    dataset: Input[Dataset],
    teacher: Input[Model],
    student: Input[Model],
    prune: dict,
    method: str,
    pruned: Output[Model],
    metrics: Output[Metrics],
):
    """Prune the student's encoder weights to the target sparsity (cubic schedule, distillation loss).

    Args:
        dataset: The prepared dataset (train for pruning, validation and test for accuracy).
        teacher: The fine-tuned teacher artifact; its logits are the soft targets.
        student: The distilled student artifact to prune.
        prune: The ``prune`` section of the pipeline config (target sparsity, schedule, scope, training).
        method: ``magnitude`` or ``movement``.
        pruned: The pruned model: a shrink artifact with compact sparse weights (bitmask + values, zstd).
        metrics: Sparsity reached, accuracy before and after, stored weight bytes against dense.
    """
    from shrink.config import PruneConfig, from_dict
    from shrink.kfp_io import component_main
    from shrink.prune import prune_unstructured

    with component_main("prune", metrics):
        cfg = from_dict(PruneConfig, prune, "prune")
        meta = prune_unstructured(cfg, method, dataset.path, teacher.path, student.path, pruned.path)
        pruned.metadata.update(
            {
                "format": meta.format,
                "precision": meta.precision,
                "technique": meta.technique,
                "content_hash": meta.content_hash(),
                "sparsity": meta.metrics["sparsity"],
            }
        )
        for key in (
            "sparsity",
            "val_accuracy",
            "test_accuracy",
            "dense_val_accuracy",
            "dense_test_accuracy",
            "weights_bytes",
            "dense_weights_bytes",
            "train_seconds",
        ):
            metrics.log_metric(key, meta.metrics[key])
