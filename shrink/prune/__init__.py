"""Pruning: unstructured (magnitude, movement) for smaller artifacts, structured for faster CPUs.

Unstructured pruning zeroes individual weights. Sparsity rises gradually on Zhu
& Gupta's (2017) cubic schedule while the student keeps training with the
teacher's soft targets, because removing 90% of the weights at once destroys
the model while removing them a little at a time lets the rest compensate.
Magnitude pruning drops the smallest weights; movement pruning (Sanh et al.
2020) the ones fine-tuning moves towards zero. Dense kernels do not run zeros
faster, so unstructured pruning buys storage (see :mod:`shrink.sparse`), not
latency. Structured pruning removes whole attention heads and FFN neurons
chosen by gradient importance (Michel et al. 2019) and physically slices the
Linear layers, so the model is a smaller dense BERT that runs faster
everywhere, then recovers accuracy by distillation.

The modules, bottom up:

* :mod:`~shrink.prune.schedule`: when sparsity rises.
* :mod:`~shrink.prune.training`: the student and the teacher's logits, and
  training through :func:`shrink.train.fit`.
* :mod:`~shrink.prune.unstructured`: what gets pruned, the magnitude and
  movement pruners, :func:`prune_model`.
* :mod:`~shrink.prune.structured`: head and neuron importance, slicing,
  :func:`structured_prune_model`.
* :mod:`~shrink.prune.storage`: the sealed artifact with compact weights.
* :mod:`~shrink.prune.run`: the steps the components call,
  :func:`prune_unstructured` and :func:`prune_structured`.

Everything the components, the bench and the tests use is importable from
``shrink.prune`` itself.
"""

from shrink.prune.run import TECHNIQUES, prune_structured, prune_unstructured
from shrink.prune.schedule import Schedule, make_schedule, total_steps
from shrink.prune.storage import save_pruned
from shrink.prune.structured import (
    choose_structure,
    importance,
    remove_heads_and_neurons,
    structured_prune_model,
)
from shrink.prune.training import PruneData, StepCallback, copy_model, evaluate, load_inputs, train_with_teacher
from shrink.prune.unstructured import (
    METHODS,
    MagnitudePruner,
    MovementPruner,
    effective_weight,
    make_pruner,
    prunable_weights,
    prune_model,
    sparsity_report,
)

__all__ = [
    "METHODS",
    "TECHNIQUES",
    "MagnitudePruner",
    "MovementPruner",
    "PruneData",
    "Schedule",
    "StepCallback",
    "choose_structure",
    "copy_model",
    "effective_weight",
    "evaluate",
    "importance",
    "load_inputs",
    "make_pruner",
    "make_schedule",
    "prunable_weights",
    "prune_model",
    "prune_structured",
    "prune_unstructured",
    "remove_heads_and_neurons",
    "save_pruned",
    "sparsity_report",
    "structured_prune_model",
    "total_steps",
    "train_with_teacher",
]
