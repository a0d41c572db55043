"""Unstructured pruning: individual weights zeroed, for smaller artifacts.

Sparsity rises along :mod:`shrink.prune.schedule` while the student keeps
training with the teacher's soft targets. Two criteria decide what goes:

* magnitude: the smallest ``|w|`` (``torch.nn.utils.prune``). Right for a model
  trained on this task, where small weights really matter little.
* movement (Sanh, Wolf & Rush 2020): a learned score per weight, trained with a
  straight-through estimator, keeps the top-k weights that move away from zero
  during fine-tuning. Right for transfer learning, where pretrained magnitudes
  say little about what the new task needs.

Dense kernels do not run zeros faster, so this buys storage (see
:mod:`shrink.sparse`), not latency.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from shrink.config import PruneConfig
from shrink.errors import ShrinkError
from shrink.logs import log
from shrink.prune.schedule import Schedule, make_schedule, total_steps
from shrink.prune.training import PruneData, StepCallback, train_with_teacher

METHODS = ("magnitude", "movement")


# --------------------------------------------------------------------------- what gets pruned


def prunable_weights(
    model: nn.Module, include_embeddings: bool = False, include_classifier: bool = False
) -> list[tuple[str, nn.Module]]:
    """(name, module) of every weight matrix to prune: the encoder's Linear layers, optionally more.

    The embeddings are off by default: on a small student they are most of the
    bytes, but every row is a word some user will type, and pruning them costs
    more accuracy per byte than the encoder does. The pooler and classifier are
    off by default because they are tiny and every output depends on them.
    """
    base = getattr(model, "base_model", model)
    encoder = getattr(base, "encoder", None)
    embeddings = getattr(base, "embeddings", None)
    encoder_ids = {id(m) for m in encoder.modules()} if encoder is not None else set()
    embedding_ids = {id(m) for m in embeddings.modules()} if embeddings is not None else set()
    out = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and id(module) in encoder_ids:
            out.append((name, module))
        elif include_embeddings and isinstance(module, nn.Embedding) and id(module) in embedding_ids:
            out.append((name, module))
        elif (
            include_classifier
            and isinstance(module, nn.Linear)
            and id(module) not in encoder_ids
            and id(module) not in embedding_ids
        ):
            out.append((name, module))
    if not any(isinstance(m, nn.Linear) for _, m in out):
        raise ShrinkError(
            f"{type(model).__name__}: no Linear layers to prune (its encoder has "
            f"{len(getattr(encoder, 'layer', []) or [])} layers and no nn.Linear weights)"
        )
    return out


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight the module computes with now, whether a pruning mask is attached or baked in."""
    if hasattr(module, "weight_mask"):  # torch.nn.utils.prune reparametrisation
        return module.weight_orig * module.weight_mask
    return module.weight


@torch.no_grad()
def sparsity_report(targets: list[tuple[str, nn.Module]]) -> dict[str, Any]:
    """Share of exactly-zero weights, overall (over the pruned matrices) and per matrix."""
    layers, zeros, total = {}, 0, 0
    for name, module in targets:
        w = effective_weight(module)
        z = int((w == 0).sum())
        layers[name] = z / w.numel()
        zeros, total = zeros + z, total + w.numel()
    return {
        "overall": zeros / max(total, 1),
        "zero_weights": zeros,
        "pruned_weights": total,
        "layers": layers,
    }


def _keep_mask(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Boolean mask of exactly ``keep`` largest entries (ties broken by position), so sparsity is exact."""
    flat = scores.flatten()
    n = flat.numel()
    if keep >= n:
        return torch.ones_like(flat, dtype=torch.bool).view_as(scores)
    if keep <= 0:
        return torch.zeros_like(flat, dtype=torch.bool).view_as(scores)
    threshold = flat.kthvalue(n - keep).values  # the largest dropped value
    mask = flat > threshold
    short = keep - int(mask.sum())
    if short > 0:
        ties = torch.nonzero(flat == threshold).flatten()[:short]
        mask[ties] = True
    return mask.view_as(scores)


# --------------------------------------------------------------------------- pruners


class MagnitudePruner:
    """Gradual magnitude pruning with ``torch.nn.utils.prune`` masks (monotone: pruned stays pruned)."""

    def __init__(self, targets: list[tuple[str, nn.Module]], scope: str = "global"):
        self.targets = targets
        self.scope = scope

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Extra optimiser groups (none: the masks are not learned)."""
        return []

    @staticmethod
    def _pruned(module: nn.Module) -> int:
        return int((module.weight_mask == 0).sum()) if hasattr(module, "weight_mask") else 0

    @staticmethod
    def _importance(module: nn.Module) -> torch.Tensor:
        # The live weights: after an optimiser step ``module.weight`` is last forward's stale copy.
        return (module.weight_orig if hasattr(module, "weight_mask") else module.weight).detach()

    @torch.no_grad()
    def update(self, sparsity: float) -> None:
        """Prune the smallest remaining weights until ``sparsity`` of them (global or per matrix) are 0."""
        import torch.nn.utils.prune as tprune

        if self.scope == "global":
            total = sum(m.weight.numel() for _, m in self.targets)
            amount = round(sparsity * total) - sum(self._pruned(m) for _, m in self.targets)
            if amount > 0:
                tprune.global_unstructured(
                    [(m, "weight") for _, m in self.targets],
                    pruning_method=tprune.L1Unstructured,
                    importance_scores={(m, "weight"): self._importance(m) for _, m in self.targets},
                    amount=amount,
                )
            return
        for _, m in self.targets:
            amount = round(sparsity * m.weight.numel()) - self._pruned(m)
            if amount > 0:
                tprune.l1_unstructured(m, "weight", amount=amount, importance_scores=self._importance(m))

    def finalize(self) -> None:
        """Bake the masks into plain weights (``prune.remove``): zeros stay, the reparametrisation goes."""
        import torch.nn.utils.prune as tprune

        for _, m in self.targets:
            if hasattr(m, "weight_mask"):
                tprune.remove(m, "weight")


class _MovementMask(nn.Module):
    """``W' = W * M``, ``M`` the top-k of learned scores ``S``; straight-through: ``dL/dS = dL/dW' * W``."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.scores = nn.Parameter(torch.zeros_like(weight))
        self.register_buffer("mask", torch.ones_like(weight, dtype=torch.bool))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * (self.mask.to(weight.dtype) + self.scores - self.scores.detach())


class MovementPruner:
    """Hard movement pruning: top-k of scores trained alongside the weights, masks recomputed every step.

    Scores start at zero (Sanh et al.'s constant init) and accumulate ``-W * dL/dW``
    from the first step, so by the time the schedule starts they rank weights by
    how fine-tuning moves them, not by their pretrained size.
    """

    def __init__(self, targets: list[tuple[str, nn.Module]], scope: str = "global", scores_lr: float = 1e-2):
        from torch.nn.utils import parametrize

        self.targets = targets
        self.scope = scope
        self.scores_lr = scores_lr
        self.masks: list[_MovementMask] = []
        for _, m in targets:
            mm = _MovementMask(m.weight.detach())
            parametrize.register_parametrization(m, "weight", mm)
            self.masks.append(mm)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The scores train with their own (larger) learning rate and no weight decay."""
        return [{"params": [mm.scores for mm in self.masks], "lr": self.scores_lr, "weight_decay": 0.0}]

    @torch.no_grad()
    def update(self, sparsity: float) -> None:
        """Masks keep the top ``1 - sparsity`` of the scores; a weight dropped earlier may come back."""
        if self.scope == "global":
            flat = torch.cat([mm.scores.flatten() for mm in self.masks])
            keep = _keep_mask(flat, flat.numel() - round(sparsity * flat.numel()))
            offset = 0
            for mm in self.masks:
                n = mm.scores.numel()
                mm.mask.copy_(keep[offset : offset + n].view_as(mm.mask))
                offset += n
            return
        for mm in self.masks:
            n = mm.scores.numel()
            mm.mask.copy_(_keep_mask(mm.scores, n - round(sparsity * n)))

    @torch.no_grad()
    def finalize(self) -> None:
        """Write ``W * M`` into the weights and drop the scores: a plain module with exact zeros."""
        from torch.nn.utils import parametrize

        for (_, m), mm in zip(self.targets, self.masks, strict=True):
            m.parametrizations.weight.original.mul_(mm.mask.to(m.parametrizations.weight.original.dtype))
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)


def make_pruner(model: nn.Module, cfg: PruneConfig, method: str):
    """The pruner for ``method`` over the configured weights of ``model``."""
    if method not in METHODS:
        raise ShrinkError(
            f"method: {method!r} is not one of {', '.join(map(repr, METHODS))} (structured has its own step)"
        )
    targets = prunable_weights(model, cfg.include_embeddings, cfg.include_classifier)
    if method == "magnitude":
        return MagnitudePruner(targets, cfg.scope)
    return MovementPruner(targets, cfg.scope, cfg.scores_learning_rate)


# --------------------------------------------------------------------------- the technique


def _update_if_due(pruner, schedule: Schedule, step: int) -> None:
    """Recompute the masks the next step (``step``, counting from 0) trains with, if the schedule says so.

    Magnitude masks change only at the schedule's update steps. Movement masks
    are the top-k of scores that train every step, so from the schedule's start
    on they are recomputed before every step.
    """
    every_step = isinstance(pruner, MovementPruner)
    if schedule.updates_at(step) or (every_step and step >= schedule.start):
        pruner.update(schedule.sparsity(step))


def _after_step(
    pruner, schedule: Schedule, total: int, model: nn.Module, on_step: StepCallback | None
) -> Callable[[int], None]:
    """The training loop's hook: ``on_step(step, model)`` first, then the masks for the step that follows.

    ``on_step`` sees the masks the step trained with; after the last step the
    caller applies the final sparsity itself.
    """

    def hook(step: int) -> None:
        if on_step is not None:
            on_step(step, model)
        if step % max(1, total // 10) == 0:
            log.info("pruning: step %d/%d, target sparsity %.3f", step, total, schedule.sparsity(step))
        if step < total:
            _update_if_due(pruner, schedule, step)

    return hook


def prune_model(
    model: nn.Module,
    data: PruneData,
    cfg: PruneConfig,
    method: str,
    device: torch.device,
    on_step: StepCallback | None = None,
) -> dict[str, Any]:
    """Gradually prune ``model`` in place to ``cfg.target_sparsity``; returns sparsity and training stats.

    The masks move after each optimiser step (the training loop's hook), for
    the step that follows; ``on_step(step, model)`` runs first, so it sees the
    masks that step trained with (tests watch the zeros there). On return the
    masks are baked in: ``model`` is a plain module whose pruned weights are
    exactly zero.
    """
    total = total_steps(cfg, len(data.train))
    schedule = make_schedule(cfg, total)
    model.to(device)
    pruner = make_pruner(model, cfg, method)
    log.info(
        "%s pruning %d weight matrices (%s) to %.0f%% over steps %d-%d of %d",
        method,
        len(pruner.targets),
        cfg.scope,
        100 * cfg.target_sparsity,
        schedule.start,
        schedule.end,
        total,
    )
    _update_if_due(pruner, schedule, 0)  # the masks the first step trains with
    stats = train_with_teacher(
        model,
        data,
        cfg,
        device,
        desc=f"prune {method}",
        on_step=_after_step(pruner, schedule, total, model, on_step),
        extra_groups=pruner.parameter_groups(),
    )
    pruner.update(schedule.final)  # the schedule may end exactly at the last step
    pruner.finalize()
    report = sparsity_report(pruner.targets)
    log.info(
        "%s pruning reached %.4f sparsity over %d weights",
        method,
        report["overall"],
        report["pruned_weights"],
    )
    return {
        **stats,
        "sparsity": report,
        "schedule": {"start": schedule.start, "steps": schedule.steps, "total": total},
    }
