"""One training loop for every step that fine-tunes a classifier: teacher, distillation, pruning.

The loss is ``alpha * CE + (1 - alpha) * T^2 * KL(teacher || student)`` (Hinton et
al.), so plain fine-tuning is the same loop with ``alpha = 1`` and no teacher.
Sharing the loop means every model in a run is trained with the same optimiser,
schedule, batching, early stopping and seeding, and differences in the results
come from the technique, not from the plumbing.

Speed on CPU comes from short batches: texts are tokenized once, batches are
padded only to their longest text, and batches are formed from texts of similar
length (sorted within chunks of a shuffled order, so the order stays random).
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from shrink.config import TrainConfig
from shrink.errors import ShrinkError
from shrink.logs import log, progress

# Batches are sorted by length within chunks of this many batches: long enough to
# group similar lengths, short enough that the shuffled order still mixes the data.
SORT_CHUNK_BATCHES = 50
THREADS_ENV = "SHRINK_THREADS"


UNLABELED = -1


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor,
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    """Knowledge-distillation loss: ``alpha * CE + (1 - alpha) * T^2 * KL(p_teacher^T || p_student^T)``.

    The ``T^2`` factor keeps the soft-target gradients on the same scale as the
    hard-label ones whatever the temperature, so ``alpha`` means the same thing
    at every T. With ``alpha == 1`` this is exactly cross-entropy and the teacher
    is not needed.

    Rows labelled ``UNLABELED`` (-1) come from the augmented transfer set: they
    have only the teacher's answer, so their loss is the soft term alone,
    ``T^2 * KL``. The batch's loss is the mean over rows either way.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ShrinkError(f"alpha: {alpha} must be in [0, 1]")
    if not temperature > 0:
        raise ShrinkError(f"temperature: {temperature} must be > 0")
    student_logits = student_logits.float()
    labeled = labels != UNLABELED
    ce = F.cross_entropy(student_logits, labels.clamp(min=0), reduction="none")
    if alpha == 1.0:
        if not bool(labeled.all()):
            raise ShrinkError("alpha: 1 trains on labels only, but this batch has unlabeled (transfer-set) rows")
        return ce.mean()
    if teacher_logits is None:
        raise ShrinkError(f"alpha: {alpha} < 1 needs teacher logits")
    t = float(temperature)
    kl = F.kl_div(
        F.log_softmax(student_logits / t, dim=-1),
        F.log_softmax(teacher_logits.float() / t, dim=-1),
        log_target=True,
        reduction="none",
    ).sum(dim=-1)
    soft = t * t * kl
    per_row = torch.where(labeled, alpha * ce + (1.0 - alpha) * soft, soft)
    return per_row.mean()


def patient_loss(student_cls: torch.Tensor, teacher_cls: torch.Tensor) -> torch.Tensor:
    """Patient KD (Sun et al., 2019): squared distance of L2-normalised [CLS] states, summed over layers.

    Both are ``[batch, layers, hidden]``: student layer ``j`` against the teacher
    layer it stands for. Normalising makes the term about direction, not scale,
    which is what the paper found to work; the batch's loss is the mean over rows.
    """
    s = F.normalize(student_cls.float(), dim=-1)
    t = F.normalize(teacher_cls.float(), dim=-1)
    return (s - t).pow(2).sum(dim=-1).sum(dim=-1).mean()


# --------------------------------------------------------------------------- device


def cpu_cores() -> int:
    """CPUs this process may run on (the affinity mask, which containers narrow), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_threads() -> int:
    """Threads for CPU training: every core, unless ``SHRINK_THREADS`` says otherwise.

    On a machine shared with other jobs, more threads than free cores makes
    PyTorch's thread pool wait on descheduled threads (ten times slower, measured),
    so shared machines and test runs set ``SHRINK_THREADS``.
    """
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return cpu_cores()
    if not value.isdigit() or int(value) < 1:
        raise ShrinkError(f"{THREADS_ENV}={value!r}: expected a positive integer")
    return int(value)


def select_device(prefer: str = "auto") -> torch.device:
    """CUDA when present (or demanded), otherwise the CPU with all its cores.

    PyTorch's default thread count can be lower than the cores a pod is given;
    training is compute-bound, so every core is used.
    """
    if prefer not in ("auto", "cpu", "cuda"):
        raise ShrinkError(f"train.device: {prefer!r} is not one of 'auto', 'cpu', 'cuda'")
    if prefer != "cpu" and torch.cuda.is_available():
        return torch.device("cuda")
    if prefer == "cuda":
        raise ShrinkError(
            "train.device: 'cuda' was asked for but no CUDA device is visible (torch.cuda.is_available() is False)"
        )
    torch.set_num_threads(cpu_threads())
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices): same seed, same data order, same weights."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- data


@dataclass
class Encoded:
    """Texts tokenized once (unpadded) with their labels, ready to be batched many times."""

    features: dict[str, list[list[int]]]
    labels: np.ndarray
    pad_id: int

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> np.ndarray:
        """Token count of every example (what batches are grouped by)."""
        return np.fromiter((len(ids) for ids in self.features["input_ids"]), dtype=np.int64, count=len(self))

    def concat(self, other: Encoded) -> Encoded:
        """These examples followed by ``other``'s (the training split plus a transfer set)."""
        if set(self.features) != set(other.features) or self.pad_id != other.pad_id:
            raise ShrinkError("cannot join encodings made by different tokenizers")
        return Encoded(
            {k: self.features[k] + other.features[k] for k in self.features},
            np.concatenate([self.labels, other.labels]),
            self.pad_id,
        )

    def batch(self, index: np.ndarray) -> dict[str, torch.Tensor]:
        """Tensors for the examples ``index``, padded to the longest of them (dynamic padding)."""
        lengths = [len(self.features["input_ids"][i]) for i in index]
        width = max(lengths)
        out = {}
        for name, rows in self.features.items():
            pad = self.pad_id if name == "input_ids" else 0
            arr = np.full((len(index), width), pad, dtype=np.int64)
            for r, (i, n) in enumerate(zip(index, lengths, strict=True)):
                arr[r, :n] = rows[i]
            out[name] = torch.from_numpy(arr)
        return out


def encode(tokenizer, texts: list[str], labels, max_length: int) -> Encoded:
    """Tokenize without padding; padding happens per batch."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in enc]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return Encoded({n: enc[n] for n in names}, np.asarray(labels, dtype=np.int64), int(pad_id))


def length_grouped_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of similar-length examples.

    Shuffle, cut into chunks of ``SORT_CHUNK_BATCHES`` batches, sort each chunk by
    length, slice into batches, then shuffle the batches: little padding, yet a
    different random mix every epoch.
    """
    order = rng.permutation(len(lengths))
    chunk = batch_size * SORT_CHUNK_BATCHES
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    if device.type == "cuda":
        return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
    return batch


def _autocast(device: torch.device):
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def cls_states(hidden_states: tuple[torch.Tensor, ...], layers: list[int] | None = None) -> torch.Tensor:
    """[CLS] state after each encoder layer (``[batch, layers, hidden]``), from HF's ``hidden_states``.

    ``hidden_states[0]`` is the embeddings' output, so encoder layer ``i`` is entry
    ``i + 1``; ``layers`` picks some of them (default: all, in order).
    """
    picked = hidden_states[1:] if layers is None else [hidden_states[i + 1] for i in layers]
    return torch.stack([h[:, 0] for h in picked], dim=1)


@torch.inference_mode()
def _predict(model, data: Encoded, batch_size, device, desc, cls_layers) -> tuple[np.ndarray, np.ndarray | None]:
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    order = np.argsort(data.lengths, kind="stable")
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    logits = np.zeros((len(data), model.config.num_labels), dtype=np.float32)
    states = None
    if cls_layers is not None:
        states = np.zeros((len(data), len(cls_layers), model.config.hidden_size), dtype=np.float16)
    for index in progress(batches, desc) if desc else batches:
        with _autocast(device):
            out = model(**_to_device(data.batch(index), device), output_hidden_states=states is not None)
        logits[index] = out.logits.float().cpu().numpy()
        if states is not None:
            states[index] = cls_states(out.hidden_states, cls_layers).float().cpu().numpy()
    model.train(was_training)
    return logits, states


def predict_logits(
    model, data: Encoded, batch_size: int = 64, device: torch.device | None = None, desc: str | None = None
) -> np.ndarray:
    """Logits for every example, in the original order (batches are length-sorted for speed)."""
    return _predict(model, data, batch_size, device, desc, None)[0]


def predict_cls_states(
    model,
    data: Encoded,
    layers: list[int],
    batch_size: int = 64,
    device: torch.device | None = None,
    desc: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(logits ``[N, labels]``, [CLS] state after each of ``layers`` ``[N, len(layers), hidden]``), one pass.

    Patient distillation's targets: the teacher's per-layer [CLS] states, computed
    once like its logits. Kept as float16 (they are only compared after
    normalisation, and half the bytes is a smaller artifact).
    """
    return _predict(model, data, batch_size, device, desc, list(layers))


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose argmax is the label."""
    return float((logits.argmax(axis=-1) == labels).mean()) if len(labels) else 0.0


# --------------------------------------------------------------------------- loop


@dataclass
class FitResult:
    """What a training run did; the fields go into the artifact's metrics."""

    best_val_accuracy: float = -1.0
    best_epoch: int = 0
    epochs_run: int = 0
    steps: int = 0
    train_seconds: float = 0.0
    examples_per_s: float = 0.0
    stopped_early: bool = False
    device: str = "cpu"
    history: list[dict[str, float]] = field(default_factory=list)

    def metrics(self) -> dict[str, Any]:
        """The result as artifact metrics (validation accuracy is that of the kept checkpoint)."""
        return {
            "val_accuracy": self.best_val_accuracy,
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "steps": self.steps,
            "train_seconds": round(self.train_seconds, 2),
            "examples_per_s": round(self.examples_per_s, 1),
            "stopped_early": self.stopped_early,
            "device": self.device,
        }


class NonFiniteLoss(ShrinkError):
    """Training diverged; the model holds the best checkpoint so far (if an epoch finished and one was kept).

    Attributes:
        result: What the run did up to the failure.
        has_checkpoint: Whether the model was reset to a finished epoch's checkpoint, so there is
            something worth saving.
    """

    def __init__(self, message: str, result: FitResult, has_checkpoint: bool | None = None):
        super().__init__(message)
        self.result = result
        self.has_checkpoint = result.best_epoch > 0 if has_checkpoint is None else has_checkpoint


def linear_warmup_decay(optimizer, warmup: int, total: int):
    """Learning rate rising linearly over ``warmup`` steps, then falling linearly to 0 at ``total`` (BERT's)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def adamw(model, cfg: TrainConfig, extra_groups: list[dict[str, Any]] | None = None):
    """AdamW over the model's trainable parameters (and ``extra_groups``, e.g. pruning scores).

    No weight decay on biases and LayerNorm weights, as in BERT's recipe;
    parameters already in ``extra_groups`` are left to those groups.
    """
    extra_groups = extra_groups or []
    taken = {id(p) for g in extra_groups for p in g["params"]}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in taken:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel on CPU too: the same AdamW update, but one pass over each tensor instead of a dozen.
    # With BERT's 30k x 384 word-embedding matrix in the step, that is 13 ms instead of 88 ms per step on one
    # core (measured), a quarter of a MiniLM student's training time.
    try:
        return torch.optim.AdamW(groups + extra_groups, lr=cfg.learning_rate, fused=True)
    except RuntimeError:  # a device or dtype without the fused kernel
        return torch.optim.AdamW(groups + extra_groups, lr=cfg.learning_rate)


def _targets(
    model,
    train: Encoded,
    alpha: float,
    teacher_logits: np.ndarray | torch.Tensor | None,
    teacher_states: np.ndarray | None,
    patient_weight: float,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The teacher's logits and [CLS] states as tensors, checked against the training rows they align with.

    The states come back only when patient distillation is on (``patient_weight > 0``).
    """
    if teacher_logits is not None:
        teacher_logits = torch.as_tensor(np.asarray(teacher_logits, dtype=np.float32))
        if teacher_logits.shape[0] != len(train):
            raise ShrinkError(f"teacher logits: {teacher_logits.shape[0]} rows for {len(train)} training examples")
    elif alpha < 1.0:
        raise ShrinkError(f"alpha: {alpha} < 1 needs teacher logits")
    if teacher_states is None or patient_weight <= 0:
        return teacher_logits, None
    want = (len(train), model.config.num_hidden_layers, model.config.hidden_size)
    if tuple(teacher_states.shape) != want:
        raise ShrinkError(f"teacher [CLS] states: shape {tuple(teacher_states.shape)}, expected {want}")
    return teacher_logits, torch.from_numpy(np.asarray(teacher_states))


def _optimizer_step(model, optimizer, scheduler, loss: torch.Tensor, max_grad_norm: float) -> None:
    """Backward, clip the gradient norm, step the optimiser and the learning-rate schedule."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    scheduler.step()


def fit(
    model,
    train: Encoded,
    val: Encoded,
    cfg: TrainConfig,
    *,
    teacher_logits: np.ndarray | torch.Tensor | None = None,
    alpha: float = 1.0,
    temperature: float = 1.0,
    device: torch.device | None = None,
    desc: str = "train",
    on_step: Callable[[int], None] | None = None,
    teacher_states: np.ndarray | None = None,
    patient_weight: float = 0.0,
    extra_groups: list[dict[str, Any]] | None = None,
    keep_best: bool = True,
) -> FitResult:
    """Train ``model`` in place with :func:`kd_loss`; it ends holding the best validation checkpoint.

    Validation accuracy is measured after every epoch; the best weights are kept
    in memory and restored at the end, and training stops after
    ``cfg.early_stopping_patience`` epochs without improvement. ``teacher_logits``
    are rows aligned with ``train`` (computed once, reused every epoch).
    ``teacher_states`` (``[N, student layers, hidden]``, aligned with ``train``) adds
    ``patient_weight * patient_loss`` on the student's per-layer [CLS] states.

    Pruning trains through the same loop with two hooks. ``on_step(step)`` runs
    after every optimiser step, ``step`` counting the steps done, so it is where
    the masks for the next step are recomputed; ``extra_groups`` are optimiser
    groups beside the model's (movement pruning's scores). ``keep_best=False``
    runs every step and ends with the last weights, no early stopping and no
    checkpoint restored: pruning's earlier epochs are less sparse, and the point
    is the model at the target sparsity.

    Raises:
        NonFiniteLoss: the loss became NaN or infinite; the model is reset to the
            best checkpoint so far, which the caller can still save.
    """
    teacher_logits, teacher_states = _targets(model, train, alpha, teacher_logits, teacher_states, patient_weight)
    patient = teacher_states is not None
    device = device or select_device(cfg.device)
    seed_everything(cfg.seed)
    model.to(device)
    model.train()
    rng = np.random.default_rng(cfg.seed)
    lengths = train.lengths
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = min(cfg.epochs * steps_per_epoch, cfg.max_steps or math.inf)
    optimizer = adamw(model, cfg, extra_groups)
    scheduler = linear_warmup_decay(optimizer, int(cfg.warmup_ratio * total), int(total))
    result = FitResult(device=str(device))
    best_state: dict[str, torch.Tensor] | None = None
    stale = 0
    labels_all = torch.from_numpy(train.labels)
    start = time.monotonic()
    seen = 0

    def diverged(message: str) -> NonFiniteLoss:
        if best_state is not None:
            model.load_state_dict(best_state)
        result.train_seconds = time.monotonic() - start
        if best_state is not None:
            kept = f"best checkpoint so far: epoch {result.best_epoch}, val accuracy {result.best_val_accuracy:.4f}"
        else:
            kept = "no epoch finished, nothing kept" if keep_best else "no checkpoint kept"
        return NonFiniteLoss(
            f"{desc}: {message}; {kept} (lower the learning rate or raise warmup)", result, best_state is not None
        )

    for epoch in range(1, cfg.epochs + 1):
        epoch_start, loss_sum, epoch_seen = time.monotonic(), 0.0, 0
        batches = length_grouped_batches(lengths, cfg.batch_size, rng)
        for index in progress(batches, f"{desc} epoch {epoch}/{cfg.epochs}"):
            inputs = _to_device(train.batch(index), device)
            labels = labels_all[index].to(device, non_blocking=True)
            teacher = teacher_logits[index].to(device, non_blocking=True) if teacher_logits is not None else None
            with _autocast(device):
                out = model(**inputs, output_hidden_states=patient)
            loss = kd_loss(out.logits, teacher, labels, alpha, temperature)
            if patient:
                student_cls = cls_states(out.hidden_states)
                loss = loss + patient_weight * patient_loss(student_cls, teacher_states[index].to(device))
            value = loss.item()
            if not math.isfinite(value):
                raise diverged(f"non-finite loss ({value}) at epoch {epoch}, step {result.steps + 1}")
            _optimizer_step(model, optimizer, scheduler, loss, cfg.max_grad_norm)
            result.steps += 1
            if on_step is not None:
                on_step(result.steps)
            loss_sum += value * len(index)
            epoch_seen += len(index)
            if result.steps >= total:
                break
        seen += epoch_seen
        elapsed = time.monotonic() - epoch_start
        val_acc = accuracy(predict_logits(model, val, cfg.batch_size * 2, device), val.labels)
        model.train()
        result.epochs_run = epoch
        result.history.append({"epoch": epoch, "loss": loss_sum / max(1, epoch_seen), "val_accuracy": val_acc})
        if val_acc > result.best_val_accuracy:
            result.best_val_accuracy, result.best_epoch, stale = val_acc, epoch, 0
            if keep_best:
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            stale += 1
        log.info(
            "%s epoch %d/%d: loss %.4f, val accuracy %.4f (best %.4f @ %d), %.0f examples/s, %.1fs",
            desc,
            epoch,
            cfg.epochs,
            loss_sum / max(1, epoch_seen),
            val_acc,
            result.best_val_accuracy,
            result.best_epoch,
            epoch_seen / max(elapsed, 1e-9),
            elapsed,
        )
        if result.steps >= total:
            break
        if keep_best and cfg.early_stopping_patience and stale >= cfg.early_stopping_patience:
            result.stopped_early = True
            log.info("%s: no better validation accuracy for %d epochs, stopping early", desc, stale)
            break
    result.train_seconds = time.monotonic() - start
    result.examples_per_s = seen / max(result.train_seconds, 1e-9)
    if best_state is not None:
        model.load_state_dict(best_state)
    return result
