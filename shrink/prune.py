"""Pruning: unstructured (magnitude, movement) for smaller artifacts, structured for faster CPUs.

Unstructured pruning zeroes individual weights. Sparsity rises gradually on Zhu
& Gupta's (2017) cubic schedule while the student keeps training with the
teacher's soft targets, because removing 90% of the weights at once destroys
the model while removing them a little at a time lets the rest compensate; the
cubic shape prunes fast while many redundant weights remain and slowly near the
end. Two criteria decide what goes:

* magnitude: the smallest ``|w|`` (``torch.nn.utils.prune``). Right for a model
  trained on this task, where small weights really matter little.
* movement (Sanh, Wolf & Rush 2020): a learned score per weight, trained with a
  straight-through estimator, keeps the top-k weights that move away from zero
  during fine-tuning. Right for transfer learning, where pretrained magnitudes
  say little about what the new task needs.

Dense kernels do not run zeros faster, so unstructured pruning buys storage
(see :mod:`shrink.sparse`), not latency. Structured pruning removes whole
attention heads and FFN neurons chosen by gradient importance (Michel et al.
2019) and physically slices the Linear layers, so the model is a smaller dense
BERT that runs faster everywhere, then recovers accuracy by distillation.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shrink.artifact import ArtifactMeta, write_artifact
from shrink.config import PruneConfig, save_yaml, to_dict
from shrink.errors import ShrinkError
from shrink.logs import log, progress
from shrink.sparse import LOADER, STRUCTURE_KEY, WEIGHTS_FILE, bert_layers, save_weights, structure_of
from shrink.train import (
    Encoded,
    accuracy,
    adamw,
    encode,
    kd_loss,
    length_grouped_batches,
    linear_warmup_decay,
    predict_logits,
    seed_everything,
    select_device,
)

METHODS = ("magnitude", "movement")
TECHNIQUES = {"magnitude": "prune-magnitude", "movement": "prune-movement", "structured": "prune-structured"}
# Before / after the schedule when the config leaves it open: train dense for the
# first 10% of the steps (movement scores learn there), prune over the next 60%,
# recover at the final sparsity for the last 30%.
DEFAULT_START_FRACTION = 0.1
DEFAULT_STEPS_FRACTION = 0.6

StepCallback = Callable[[int, nn.Module], None]


# --------------------------------------------------------------------------- schedule


@dataclass
class Schedule:
    """Zhu & Gupta's cubic schedule: ``s_t = s_f + (s_i - s_f) (1 - (t - t0) / n)^3``, t0 <= t <= t0 + n."""

    initial: float
    final: float
    start: int
    steps: int
    every: int = 1

    @property
    def end(self) -> int:
        """The step at which the final sparsity is reached."""
        return self.start + self.steps

    def sparsity(self, step: int) -> float:
        """Target sparsity at ``step``: flat before and after the ramp."""
        if step <= self.start:
            return self.initial
        if step >= self.end:
            return self.final
        return self.final + (self.initial - self.final) * (1.0 - (step - self.start) / self.steps) ** 3

    def updates_at(self, step: int) -> bool:
        """Whether masks are recomputed before step ``step``: every ``every`` steps, and at the end."""
        return self.start <= step <= self.end and ((step - self.start) % self.every == 0 or step == self.end)


def make_schedule(cfg: PruneConfig, total_steps: int) -> Schedule:
    """The schedule for a run of ``total_steps``; refuses one that does not fit in the training."""
    start = (
        cfg.schedule_start if cfg.schedule_start is not None else int(DEFAULT_START_FRACTION * total_steps)
    )
    steps = (
        cfg.schedule_steps
        if cfg.schedule_steps is not None
        else max(1, int(DEFAULT_STEPS_FRACTION * total_steps))
    )
    if start + steps > total_steps:
        raise ShrinkError(
            f"prune: schedule_start ({start}) + schedule_steps ({steps}) = {start + steps} is longer "
            f"than the {total_steps} training steps (prune.train epochs x batches per epoch, or max_steps); "
            "shorten the schedule or train longer"
        )
    return Schedule(cfg.initial_sparsity, cfg.target_sparsity, start, steps, cfg.update_every)


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


# --------------------------------------------------------------------------- data and training


@dataclass
class PruneData:
    """Everything a pruning run trains and measures on, prepared once (the bench reuses it across runs)."""

    train: Encoded
    validation: Encoded
    test: Encoded
    teacher_logits: np.ndarray
    label_names: list[str]


def _autocast(device: torch.device):
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def _load_torch(directory: str | Path, role: str):
    """(module, tokenizer, meta) of a PyTorch artifact, through its own loader if it has one."""
    from shrink.runtime import TorchClassifier, open_classifier

    clf = open_classifier(directory)
    if not isinstance(clf, TorchClassifier):
        raise ShrinkError(f"{role} {directory}: a {clf.meta.format} artifact; pruning needs a PyTorch one")
    return clf.module, clf.tokenizer, clf.meta


def load_inputs(
    cfg: PruneConfig, dataset_dir: str | Path, teacher_dir: str | Path, student_dir: str | Path, device
):
    """Student (module, tokenizer, meta), teacher meta, and :class:`PruneData` with the teacher's logits."""
    from shrink.data import load_prepared
    from shrink.models import check_labels

    dd, info = load_prepared(dataset_dir)
    student, tokenizer, student_meta = _load_torch(student_dir, "student")
    check_labels(
        student_meta.label_names, info.label_names, f"student {student_dir}", f"dataset {dataset_dir}"
    )
    teacher, teacher_tok, teacher_meta = _load_torch(teacher_dir, "teacher")
    check_labels(
        teacher_meta.label_names, info.label_names, f"teacher {teacher_dir}", f"dataset {dataset_dir}"
    )
    max_length = cfg.train.max_length
    data = {
        s: encode(tokenizer, dd[s]["text"], dd[s]["label"], max_length)
        for s in ("train", "validation", "test")
    }
    teacher_len = int(teacher_meta.settings.get("max_length", max_length))
    teacher_train = encode(teacher_tok, dd["train"]["text"], dd["train"]["label"], teacher_len)
    teacher.to(device)
    logits = predict_logits(teacher, teacher_train, cfg.train.batch_size * 2, device, desc="teacher logits")
    teacher.to("cpu")
    del teacher
    log.info(
        "teacher logits: %d examples, teacher train accuracy %.4f",
        len(logits),
        accuracy(logits, teacher_train.labels),
    )
    pdata = PruneData(data["train"], data["validation"], data["test"], logits, info.label_names)
    return (student, tokenizer, student_meta), teacher_meta, pdata


def total_steps(cfg: PruneConfig, n_train: int) -> int:
    """Optimiser steps a run takes: epochs of batches, capped by ``max_steps``."""
    per_epoch = math.ceil(n_train / cfg.train.batch_size)
    return int(min(cfg.train.epochs * per_epoch, cfg.train.max_steps or math.inf))


def train_with_teacher(
    model: nn.Module,
    data: PruneData,
    cfg: PruneConfig,
    device: torch.device,
    *,
    pruner=None,
    schedule: Schedule | None = None,
    desc: str = "prune",
    on_step: StepCallback | None = None,
) -> dict[str, Any]:
    """Distillation training (``kd_loss``) with an optional pruner moving along ``schedule``.

    Unlike :func:`shrink.train.fit` it never restores an earlier "best" epoch:
    earlier epochs are less sparse, and the point is the model at the target.
    Masks are updated before the optimiser step they apply to; ``on_step(step,
    model)`` runs after each step (tests watch the zeros there).
    """
    total = total_steps(cfg, len(data.train))
    seed_everything(cfg.train.seed)
    model.to(device)
    model.train()
    extra_groups = pruner.parameter_groups() if pruner is not None else []
    optimizer = adamw(model, cfg.train, extra_groups)
    scheduler = linear_warmup_decay(optimizer, int(cfg.train.warmup_ratio * total), total)
    teacher = torch.as_tensor(np.asarray(data.teacher_logits, dtype=np.float32))
    labels_all = torch.from_numpy(data.train.labels)
    rng = np.random.default_rng(cfg.train.seed)
    lengths = data.train.lengths
    movement = isinstance(pruner, MovementPruner)
    step, loss_sum, start = 0, 0.0, time.monotonic()
    bar = iter(progress(range(total), desc))
    while step < total:
        for index in length_grouped_batches(lengths, cfg.train.batch_size, rng):
            if step >= total:
                break
            if (
                pruner is not None
                and schedule is not None
                and (schedule.updates_at(step) or (movement and step >= schedule.start))
            ):
                pruner.update(schedule.sparsity(step))
            inputs = {k: v.to(device) for k, v in data.train.batch(index).items()}
            with _autocast(device):
                logits = model(**inputs).logits
            loss = kd_loss(
                logits, teacher[index].to(device), labels_all[index].to(device), cfg.alpha, cfg.temperature
            )
            value = loss.item()
            if not math.isfinite(value):
                raise ShrinkError(
                    f"{desc}: non-finite loss at step {step + 1}; lower prune.train.learning_rate"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm)
            optimizer.step()
            scheduler.step()
            loss_sum += value
            step += 1
            next(bar, None)
            if step % max(1, total // 10) == 0:
                at = f", target sparsity {schedule.sparsity(step):.3f}" if schedule is not None else ""
                log.info("%s: step %d/%d, loss %.4f%s", desc, step, total, value, at)
            if on_step is not None:
                on_step(step, model)
    if pruner is not None and schedule is not None:
        pruner.update(schedule.final)  # the schedule may end exactly at the last step
    seconds = time.monotonic() - start
    log.info("%s: %d steps, mean loss %.4f, %.1fs", desc, step, loss_sum / max(step, 1), seconds)
    return {"steps": step, "train_seconds": round(seconds, 2), "device": str(device)}


def evaluate(
    model: nn.Module, data: PruneData, device: torch.device, batch_size: int = 64
) -> dict[str, float]:
    """Validation and test accuracy (the dense student gets the same measurement for comparison)."""
    model.to(device)
    return {
        "val_accuracy": accuracy(
            predict_logits(model, data.validation, batch_size, device), data.validation.labels
        ),
        "test_accuracy": accuracy(predict_logits(model, data.test, batch_size, device), data.test.labels),
    }


def prune_model(
    model: nn.Module,
    data: PruneData,
    cfg: PruneConfig,
    method: str,
    device: torch.device,
    on_step: StepCallback | None = None,
) -> dict[str, Any]:
    """Gradually prune ``model`` in place to ``cfg.target_sparsity``; returns sparsity and training stats.

    On return the masks are baked in: ``model`` is a plain module whose pruned
    weights are exactly zero.
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
    stats = train_with_teacher(
        model, data, cfg, device, pruner=pruner, schedule=schedule, desc=f"prune {method}", on_step=on_step
    )
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


# --------------------------------------------------------------------------- structured


def _gate_hooks(model: nn.Module, head_gates: list[torch.Tensor], ffn_gates: list[torch.Tensor]) -> list:
    """Multiply each head's context and FFN neuron by a gate of 1; its gradient is the importance."""
    handles = []
    for layer, hg, fg in zip(bert_layers(model), head_gates, ffn_gates, strict=True):
        n_heads = hg.numel()

        def head_hook(_module, args, hg=hg, n_heads=n_heads):
            x = args[0]
            shaped = x.view(*x.shape[:-1], n_heads, x.shape[-1] // n_heads) * hg[:, None]
            return (shaped.view(x.shape), *args[1:])

        def ffn_hook(_module, args, fg=fg):
            return (args[0] * fg, *args[1:])

        handles.append(layer.attention.output.dense.register_forward_pre_hook(head_hook))
        handles.append(layer.output.dense.register_forward_pre_hook(ffn_hook))
    return handles


def importance(model: nn.Module, data: PruneData, cfg: PruneConfig, device: torch.device):
    """Michel et al.'s ``I_h = E |dL/d gate_h|`` per head, and the same per FFN neuron, under the KD loss.

    Returns ``(heads, neurons)``: one tensor per layer each. Gradients are taken
    per batch of ``prune.train.batch_size`` over ``prune.importance_examples``
    training examples, dropout off.
    """
    layers = bert_layers(model)
    struct = structure_of(model)
    model.to(device)
    model.eval()
    head_gates = [torch.ones(h, device=device, requires_grad=True) for h in struct["heads"]]
    ffn_gates = [torch.ones(w, device=device, requires_grad=True) for w in struct["intermediate"]]
    head_imp = [torch.zeros(h) for h in struct["heads"]]
    ffn_imp = [torch.zeros(w) for w in struct["intermediate"]]
    handles = _gate_hooks(model, head_gates, ffn_gates)
    teacher = torch.as_tensor(np.asarray(data.teacher_logits, dtype=np.float32))
    labels_all = torch.from_numpy(data.train.labels)
    order = np.random.default_rng(cfg.train.seed).permutation(len(data.train))[: cfg.importance_examples]
    batches = [order[i : i + cfg.train.batch_size] for i in range(0, len(order), cfg.train.batch_size)]
    try:
        for index in progress(batches, "head/neuron importance"):
            inputs = {k: v.to(device) for k, v in data.train.batch(index).items()}
            logits = model(**inputs).logits
            loss = kd_loss(
                logits, teacher[index].to(device), labels_all[index].to(device), cfg.alpha, cfg.temperature
            )
            grads = torch.autograd.grad(loss, head_gates + ffn_gates)
            for i in range(len(layers)):
                head_imp[i] += grads[i].detach().abs().cpu()
                ffn_imp[i] += grads[len(layers) + i].detach().abs().cpu()
    finally:
        for h in handles:
            h.remove()
    return head_imp, ffn_imp


def _n_removed(fraction: float, count: int) -> int:
    return int(fraction * count + 0.5)


def choose_structure(
    head_scores: list[torch.Tensor],
    neuron_scores: list[torch.Tensor],
    head_fraction: float,
    ffn_fraction: float,
) -> tuple[list[list[int]], list[list[int]]]:
    """Indices of the heads and neurons to KEEP in each layer: the most important, the same count per layer.

    The same count per layer keeps every layer's matrices the same shape, which
    is what CPU kernels and ONNX Runtime's fused attention handle best.
    """
    keep_heads, keep_neurons = [], []
    for i, (hs, ns) in enumerate(zip(head_scores, neuron_scores, strict=True)):
        drop_h, drop_n = _n_removed(head_fraction, hs.numel()), _n_removed(ffn_fraction, ns.numel())
        if drop_h >= hs.numel():
            raise ShrinkError(
                f"prune.head_fraction: {head_fraction} of layer {i}'s {hs.numel()} heads removes {drop_h}, "
                "leaving it no attention heads; lower it"
            )
        if drop_n >= ns.numel():
            raise ShrinkError(
                f"prune.ffn_fraction: {ffn_fraction} of layer {i}'s {ns.numel()} FFN neurons "
                f"removes {drop_n}, "
                "leaving it none; lower it"
            )
        keep_heads.append(sorted(torch.topk(hs, hs.numel() - drop_h).indices.tolist()))
        keep_neurons.append(sorted(torch.topk(ns, ns.numel() - drop_n).indices.tolist()))
    return keep_heads, keep_neurons


def _slice_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping output rows (``dim=0``) or input columns (``dim=1``) ``index``."""
    weight = linear.weight.detach().index_select(dim, index.to(linear.weight.device)).clone()
    bias = linear.bias.detach() if linear.bias is not None else None
    if bias is not None and dim == 0:
        bias = bias.index_select(0, index.to(bias.device))
    new = nn.Linear(
        weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype
    )
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    return new


@torch.no_grad()
def remove_heads_and_neurons(
    model: nn.Module, keep_heads: list[list[int]], keep_neurons: list[list[int]]
) -> dict[str, Any]:
    """Slice q/k/v and the attention output by head, the FFN in/out by neuron; returns the new structure.

    The head size stays; each layer's head count becomes ``len(keep_heads[i])``.
    Transformers' BertSelfAttention infers the head count from the projection's
    width (``view(..., -1, head_size)``), so the sliced module runs unchanged, and
    ``config.shrink_structure`` records the shapes for :func:`shrink.sparse.build_model`.
    """
    layers = bert_layers(model)
    if len(keep_heads) != len(layers) or len(keep_neurons) != len(layers):
        raise ShrinkError(
            f"structured pruning: got keep lists for {len(keep_heads)} layers, the model has {len(layers)}"
        )
    for i, (layer, heads, neurons) in enumerate(zip(layers, keep_heads, keep_neurons, strict=True)):
        attn = layer.attention.self
        d = attn.attention_head_size
        n_heads = attn.query.out_features // d
        if not heads:
            raise ShrinkError(f"structured pruning: layer {i} would be left with no attention heads")
        if not neurons:
            raise ShrinkError(f"structured pruning: layer {i} would be left with no FFN neurons")
        bad = [h for h in heads if not 0 <= h < n_heads] + [
            n for n in neurons if not 0 <= n < layer.intermediate.dense.out_features
        ]
        if bad or len(set(heads)) != len(heads) or len(set(neurons)) != len(neurons):
            raise ShrinkError(
                f"structured pruning: layer {i}: keep indices out of range or repeated ({bad[:3]})"
            )
        cols = torch.cat([torch.arange(h * d, (h + 1) * d) for h in sorted(heads)])
        for name in ("query", "key", "value"):
            setattr(attn, name, _slice_linear(getattr(attn, name), cols, 0))
        attn.num_attention_heads = len(heads)
        attn.all_head_size = len(heads) * d
        layer.attention.output.dense = _slice_linear(layer.attention.output.dense, cols, 1)
        idx = torch.tensor(sorted(neurons))
        layer.intermediate.dense = _slice_linear(layer.intermediate.dense, idx, 0)
        layer.output.dense = _slice_linear(layer.output.dense, idx, 1)
    structure = structure_of(model)
    setattr(model.config, STRUCTURE_KEY, structure)
    return structure


def structured_prune_model(
    model: nn.Module, data: PruneData, cfg: PruneConfig, device: torch.device
) -> dict[str, Any]:
    """Score, remove and recover: the whole structured-pruning technique on an in-memory model."""
    before = sum(p.numel() for p in model.parameters())
    heads, neurons = importance(model, data, cfg, device)
    keep_heads, keep_neurons = choose_structure(heads, neurons, cfg.head_fraction, cfg.ffn_fraction)
    structure = remove_heads_and_neurons(model, keep_heads, keep_neurons)
    after = sum(p.numel() for p in model.parameters())
    log.info(
        "removed heads/neurons: heads per layer %s, FFN widths %s, parameters %.2fM -> %.2fM",
        structure["heads"],
        structure["intermediate"],
        before / 1e6,
        after / 1e6,
    )
    pruned_acc = evaluate(model, data, device)["val_accuracy"]
    stats = train_with_teacher(model, data, cfg, device, desc="structured recovery")
    return {
        **stats,
        "structure": structure,
        "kept_heads": keep_heads,
        "parameters_before": before,
        "parameters_after": after,
        "val_accuracy_before_recovery": pruned_acc,
    }


# --------------------------------------------------------------------------- artifacts


def dense_bytes(state: dict[str, torch.Tensor]) -> int:
    """Bytes the state dict takes as plain dense safetensors (the baseline for size reports)."""
    return sum(t.numel() * t.element_size() for t in state.values())


def save_pruned(
    model: nn.Module,
    tokenizer,
    out_dir: str | Path,
    cfg: PruneConfig,
    *,
    label_names: list[str],
    technique: str,
    settings: dict[str, Any],
    parent: ArtifactMeta | None,
    metrics: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> ArtifactMeta:
    """Seal a pruned model as a shrink artifact: config, tokenizer, compact weights, prune.yaml."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.to("cpu")
    model.config.id2label = dict(enumerate(label_names))
    model.config.label2id = {n: i for i, n in enumerate(label_names)}
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    state = model.state_dict()
    stored = save_weights(state, out / WEIGHTS_FILE)
    save_yaml(cfg, out / "prune.yaml")
    metrics = {**metrics, "weights_bytes": stored, "dense_weights_bytes": dense_bytes(state)}
    return write_artifact(
        out,
        format="pytorch",
        precision="fp32",
        label_names=label_names,
        technique=technique,
        settings=settings,
        parent=parent,
        metrics=metrics,
        extra={"loader": LOADER, "weights_file": WEIGHTS_FILE, **(extra or {})},
    )


def _settings(cfg: PruneConfig, method: str) -> dict[str, Any]:
    keys = ["alpha", "temperature"] + (
        ["head_fraction", "ffn_fraction", "importance_examples"]
        if method == "structured"
        else [
            "target_sparsity",
            "initial_sparsity",
            "scope",
            "include_embeddings",
            "include_classifier",
            "schedule_start",
            "schedule_steps",
            "update_every",
        ]
        + (["scores_learning_rate"] if method == "movement" else [])
    )
    return {
        "method": method,
        **{k: getattr(cfg, k) for k in keys},
        "max_length": cfg.train.max_length,
        "train": to_dict(cfg.train),
    }


def prune_unstructured(
    cfg: PruneConfig,
    method: str,
    dataset_dir: str | Path,
    teacher_dir: str | Path,
    student_dir: str | Path,
    out_dir: str | Path,
    on_step: StepCallback | None = None,
) -> ArtifactMeta:
    """Magnitude or movement pruning of a student, distilled from the teacher, sealed with compact weights."""
    if method not in METHODS:
        raise ShrinkError(f"method: {method!r} is not one of {', '.join(map(repr, METHODS))}")
    from shrink.data import load_prepared

    dd, _ = load_prepared(dataset_dir)
    make_schedule(cfg, total_steps(cfg, len(dd["train"])))  # fail before the teacher runs if it does not fit
    device = select_device(cfg.train.device)
    (model, tokenizer, student_meta), _, data = load_inputs(
        cfg, dataset_dir, teacher_dir, student_dir, device
    )
    dense = evaluate(model, data, device)
    stats = prune_model(model, data, cfg, method, device, on_step=on_step)
    acc = evaluate(model, data, device)
    report = stats["sparsity"]
    metrics = {
        **acc,
        "dense_val_accuracy": dense["val_accuracy"],
        "dense_test_accuracy": dense["test_accuracy"],
        "sparsity": report["overall"],
        "zero_weights": report["zero_weights"],
        "pruned_weights": report["pruned_weights"],
        "steps": stats["steps"],
        "train_seconds": stats["train_seconds"],
        "device": stats["device"],
    }
    meta = save_pruned(
        model,
        tokenizer,
        out_dir,
        cfg,
        label_names=data.label_names,
        technique=TECHNIQUES[method],
        settings=_settings(cfg, method),
        parent=student_meta,
        metrics=metrics,
        extra={
            "sparsity": {"overall": report["overall"], "layers": report["layers"]},
            "schedule": stats["schedule"],
        },
    )
    log.info(
        "%s: sparsity %.4f, val accuracy %.4f (dense %.4f), weights %.2f MB (dense %.2f MB)",
        TECHNIQUES[method],
        report["overall"],
        acc["val_accuracy"],
        dense["val_accuracy"],
        meta.metrics["weights_bytes"] / 1e6,
        meta.metrics["dense_weights_bytes"] / 1e6,
    )
    return meta


def prune_structured(
    cfg: PruneConfig,
    dataset_dir: str | Path,
    teacher_dir: str | Path,
    student_dir: str | Path,
    out_dir: str | Path,
) -> ArtifactMeta:
    """Remove the least important heads and FFN neurons of a student, recover by distillation, seal it."""
    device = select_device(cfg.train.device)
    (model, tokenizer, student_meta), _, data = load_inputs(
        cfg, dataset_dir, teacher_dir, student_dir, device
    )
    bert_layers(model)  # a clear error for non-BERT models before the importance pass
    dense = evaluate(model, data, device)
    stats = structured_prune_model(model, data, cfg, device)
    acc = evaluate(model, data, device)
    structure = stats["structure"]
    metrics = {
        **acc,
        "dense_val_accuracy": dense["val_accuracy"],
        "dense_test_accuracy": dense["test_accuracy"],
        "val_accuracy_before_recovery": stats["val_accuracy_before_recovery"],
        "parameters": stats["parameters_after"],
        "dense_parameters": stats["parameters_before"],
        "parameter_reduction": 1 - stats["parameters_after"] / stats["parameters_before"],
        "heads_per_layer": structure["heads"],
        "intermediate_sizes": structure["intermediate"],
        "steps": stats["steps"],
        "train_seconds": stats["train_seconds"],
        "device": stats["device"],
    }
    meta = save_pruned(
        model,
        tokenizer,
        out_dir,
        cfg,
        label_names=data.label_names,
        technique=TECHNIQUES["structured"],
        settings=_settings(cfg, "structured"),
        parent=student_meta,
        metrics=metrics,
        extra={"structure": structure, "kept_heads": stats["kept_heads"]},
    )
    log.info(
        "prune-structured: %.2fM -> %.2fM parameters, val accuracy %.4f (dense %.4f, %.4f before recovery)",
        stats["parameters_before"] / 1e6,
        stats["parameters_after"] / 1e6,
        acc["val_accuracy"],
        dense["val_accuracy"],
        stats["val_accuracy_before_recovery"],
    )
    return meta


def copy_model(model: nn.Module) -> nn.Module:
    """An independent copy (the bench prunes one student many ways)."""
    return copy.deepcopy(model)
