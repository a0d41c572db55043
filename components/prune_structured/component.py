"""KFP component: remove whole attention heads and FFN neurons, then recover by distillation."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output


@dsl.component(base_image="shrink-prune-structured", install_kfp_package=False)
def prune_structured(
    dataset: Input[Dataset],
    teacher: Input[Model],
    student: Input[Model],
    prune: dict,
    pruned: Output[Model],
    metrics: Output[Metrics],
):
    """Score heads and FFN neurons by gradient importance, slice the least important out, distil to recover.

    Args:
        dataset: The prepared dataset (train for importance and recovery, validation and test for accuracy).
        teacher: The fine-tuned teacher artifact; its logits are the soft targets.
        student: The distilled student artifact to prune.
        prune: The ``prune`` section of the pipeline config (``head_fraction``, ``ffn_fraction``, training).
        pruned: The smaller dense model: a shrink artifact; config records each layer's heads and FFN width.
        metrics: Parameters before and after, accuracy before and after, heads and FFN width kept.
    """
    from shrink.config import PruneConfig, from_dict
    from shrink.kfp_io import component_main
    from shrink.prune import prune_structured as run

    with component_main("prune_structured", metrics):
        cfg = from_dict(PruneConfig, prune, "prune")
        meta = run(cfg, dataset.path, teacher.path, student.path, pruned.path)
        pruned.metadata.update(
            {
                "format": meta.format,
                "precision": meta.precision,
                "technique": meta.technique,
                "content_hash": meta.content_hash(),
                "parameters": meta.metrics["parameters"],
                "heads_per_layer": meta.metrics["heads_per_layer"],
                "intermediate_sizes": meta.metrics["intermediate_sizes"],
            }
        )
        for key in (
            "parameters",
            "dense_parameters",
            "parameter_reduction",
            "val_accuracy",
            "test_accuracy",
            "dense_val_accuracy",
            "dense_test_accuracy",
            "val_accuracy_before_recovery",
            "train_seconds",
        ):
            metrics.log_metric(key, meta.metrics[key])
