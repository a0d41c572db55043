"""Train a classifier with the one training loop and seal it: the step teacher fine-tuning and distillation share.

Both end the same way, a sealed PyTorch artifact holding the best validation
checkpoint with its validation and test accuracy, and both must keep what they
trained when the loss diverges late; one function does it for both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shrink.artifact import ArtifactMeta
from shrink.config import TrainConfig
from shrink.logs import log
from shrink.train import Encoded, NonFiniteLoss, accuracy, encode, fit, predict_logits, select_device


def encode_splits(tokenizer, dd, max_length: int, splits=("train", "validation", "test")) -> dict[str, Encoded]:
    """Tokenize the dataset's splits once; every epoch and evaluation reuses the result."""
    return {s: encode(tokenizer, dd[s]["text"], dd[s]["label"], max_length) for s in splits}


def train_and_save(
    model,
    tokenizer,
    data: dict[str, Encoded],
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    label_names: list[str],
    technique: str,
    settings: dict[str, Any],
    parent: ArtifactMeta | None = None,
    teacher_logits: np.ndarray | None = None,
    teacher_states: np.ndarray | None = None,
    patient_weight: float = 0.0,
    alpha: float = 1.0,
    temperature: float = 1.0,
    extra_metrics: dict[str, Any] | None = None,
    desc: str = "train",
) -> ArtifactMeta:
    """Train with :func:`shrink.train.fit`, seal the best checkpoint in ``out_dir``.

    If the loss turns non-finite, the best checkpoint so far is still sealed in
    ``out_dir`` (marked ``extra.incomplete``) before the error propagates, so hours
    of training are not lost to one bad step.
    """
    from shrink.models import save_classifier

    out = Path(out_dir)
    device = select_device(cfg.device)
    settings = {**settings, "max_length": cfg.max_length}

    def save(result, extra: dict[str, Any] | None = None) -> ArtifactMeta:
        metrics = {**result.metrics(), **(extra_metrics or {})}
        if "test" in data:
            test_logits = predict_logits(model, data["test"], cfg.batch_size * 2, device, desc=f"{desc} test")
            metrics["test_accuracy"] = accuracy(test_logits, data["test"].labels)
        model.to("cpu")
        return save_classifier(
            model,
            tokenizer,
            out,
            label_names=label_names,
            technique=technique,
            settings=settings,
            parent=parent,
            metrics=metrics,
            extra=extra,
        )

    try:
        result = fit(
            model,
            data["train"],
            data["validation"],
            cfg,
            teacher_logits=teacher_logits,
            alpha=alpha,
            temperature=temperature,
            device=device,
            desc=desc,
            teacher_states=teacher_states,
            patient_weight=patient_weight,
        )
    except NonFiniteLoss as exc:
        if exc.has_checkpoint:
            save(exc.result, extra={"incomplete": str(exc)})
            raise NonFiniteLoss(f"{exc}; the best checkpoint is saved in {out}", exc.result) from None
        raise
    meta = save(result)
    log.info(
        "%s: val accuracy %.4f, test accuracy %.4f, %.1fs; saved %s",
        desc,
        meta.metrics["val_accuracy"],
        meta.metrics.get("test_accuracy", float("nan")),
        meta.metrics["train_seconds"],
        out,
    )
    return meta
