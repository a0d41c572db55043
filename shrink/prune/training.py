"""What a pruning run trains on, and how it trains: the student, the teacher's logits, :func:`shrink.train.fit`.

Every pruning technique recovers accuracy by distillation from the teacher, so
the teacher's logits on the training texts are computed once per run (the bench
reuses them across runs). Training goes through the one training loop, the same
optimiser, schedule, batching and seeding as fine-tuning and distillation, with
two differences pruning needs: the pruner's hook after each step, and the last
weights kept instead of the best epoch's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shrink.config import PruneConfig
from shrink.errors import ShrinkError
from shrink.logs import log
from shrink.train import Encoded, accuracy, encode, fit, predict_logits

StepCallback = Callable[[int, nn.Module], None]


@dataclass
class PruneData:
    """Everything a pruning run trains and measures on, prepared once (the bench reuses it across runs)."""

    train: Encoded
    validation: Encoded
    test: Encoded
    teacher_logits: np.ndarray
    label_names: list[str]


def _load_torch(directory: str | Path, role: str):
    """(module, tokenizer, meta) of a PyTorch artifact, through its own loader if it has one."""
    from shrink.runtime import TorchClassifier, open_classifier

    clf = open_classifier(directory)
    if not isinstance(clf, TorchClassifier):
        raise ShrinkError(f"{role} {directory}: a {clf.meta.format} artifact; pruning needs a PyTorch one")
    return clf.module, clf.tokenizer, clf.meta


def load_inputs(cfg: PruneConfig, dataset_dir: str | Path, teacher_dir: str | Path, student_dir: str | Path, device):
    """Student (module, tokenizer, meta), teacher meta, and :class:`PruneData` with the teacher's logits."""
    from shrink.data import load_prepared
    from shrink.models import check_labels

    dd, info = load_prepared(dataset_dir)
    student, tokenizer, student_meta = _load_torch(student_dir, "student")
    check_labels(student_meta.label_names, info.label_names, f"student {student_dir}", f"dataset {dataset_dir}")
    teacher, teacher_tok, teacher_meta = _load_torch(teacher_dir, "teacher")
    check_labels(teacher_meta.label_names, info.label_names, f"teacher {teacher_dir}", f"dataset {dataset_dir}")
    max_length = cfg.train.max_length
    data = {s: encode(tokenizer, dd[s]["text"], dd[s]["label"], max_length) for s in ("train", "validation", "test")}
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


def train_with_teacher(
    model: nn.Module,
    data: PruneData,
    cfg: PruneConfig,
    device: torch.device,
    *,
    desc: str = "prune",
    on_step: Callable[[int], None] | None = None,
    extra_groups: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Distil ``model`` from the teacher's logits (``prune.alpha``, ``prune.temperature``) with :func:`fit`.

    Every step runs and the last weights stay (``keep_best=False``): unlike
    fine-tuning, earlier epochs are less sparse, and the point is the model at
    the target. ``on_step(step)`` runs after each optimiser step (the pruner
    recomputes its masks there); ``extra_groups`` train beside the weights
    (movement pruning's scores).
    """
    result = fit(
        model,
        data.train,
        data.validation,
        cfg.train,
        teacher_logits=data.teacher_logits,
        alpha=cfg.alpha,
        temperature=cfg.temperature,
        device=device,
        desc=desc,
        on_step=on_step,
        extra_groups=extra_groups,
        keep_best=False,
    )
    return {"steps": result.steps, "train_seconds": round(result.train_seconds, 2), "device": result.device}


def evaluate(model: nn.Module, data: PruneData, device: torch.device, batch_size: int = 64) -> dict[str, float]:
    """Validation and test accuracy (the dense student gets the same measurement for comparison)."""
    model.to(device)
    return {
        "val_accuracy": accuracy(predict_logits(model, data.validation, batch_size, device), data.validation.labels),
        "test_accuracy": accuracy(predict_logits(model, data.test, batch_size, device), data.test.labels),
    }


def copy_model(model: nn.Module) -> nn.Module:
    """An independent copy (the bench prunes one student many ways)."""
    return copy.deepcopy(model)
