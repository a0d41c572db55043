"""Structured pruning: whole attention heads and FFN neurons removed, for a model that runs faster everywhere.

Heads and neurons are chosen by gradient importance (Michel et al. 2019), the
Linear layers are physically sliced, so the model is a smaller dense BERT that
any kernel runs faster, and then it recovers accuracy by distillation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from shrink.config import PruneConfig
from shrink.errors import ShrinkError
from shrink.logs import log, progress
from shrink.prune.training import PruneData, evaluate, train_with_teacher
from shrink.sparse import STRUCTURE_KEY, bert_layers, structure_of
from shrink.train import kd_loss


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
            loss = kd_loss(logits, teacher[index].to(device), labels_all[index].to(device), cfg.alpha, cfg.temperature)
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
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype)
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
            raise ShrinkError(f"structured pruning: layer {i}: keep indices out of range or repeated ({bad[:3]})")
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


def structured_prune_model(model: nn.Module, data: PruneData, cfg: PruneConfig, device: torch.device) -> dict[str, Any]:
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
