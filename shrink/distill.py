"""Knowledge distillation: a student built from the teacher, trained on its logits and the labels.

The teacher and its logits come from :mod:`shrink.teacher` (computed once per
run); :func:`distill` trains one student per search trial and refuses logits
that belong to other data or another teacher (:func:`shrink.teacher.load_teacher_logits`).

The student is, by default, the teacher with some encoder layers kept
(DistilBERT's initialisation): it starts from the teacher's knowledge instead of
from scratch, which is most of why a half-depth student can match it.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from shrink.artifact import META_FILE, ArtifactMeta, read_meta
from shrink.config import DistillConfig, SearchConfig, check_trial, from_dict, layers_for_depth, save_yaml, to_dict
from shrink.data import load_prepared
from shrink.errors import ShrinkError
from shrink.finetune import encode_splits, train_and_save
from shrink.logs import log
from shrink.teacher import load_teacher_logits
from shrink.train import UNLABELED, encode, kd_loss, seed_everything, select_device

__all__ = [
    "check_trial",
    "distill",
    "kd_loss",
    "select_best_student",
    "select_device",
    "student_from_teacher",
]


# --------------------------------------------------------------------------- student


def encoder_layers_name(model) -> str:
    """Dotted name of the ModuleList of the encoder's transformer layers (BERT, RoBERTa, DistilBERT...)."""
    import torch

    count = model.config.num_hidden_layers
    for name, module in model.named_modules():
        if (
            isinstance(module, torch.nn.ModuleList)
            and len(module) == count
            and name.rsplit(".", 1)[-1] in ("layer", "layers")
        ):
            return name
    raise ShrinkError(f"{type(model).__name__}: cannot find its {count} encoder layers to build a student from")


def student_from_teacher(teacher, layers: list[int]):
    """A shallower copy of ``teacher`` keeping only encoder ``layers`` (DistilBERT-style initialisation).

    Embeddings, pooler and classifier are copied unchanged; student layer ``j`` is
    teacher layer ``layers[j]``. Loaded with ``strict=True``, so every student
    weight comes from the teacher and none is left random.
    """
    depth = teacher.config.num_hidden_layers
    if not layers:
        raise ShrinkError("distill.student_layers: name at least one teacher layer to keep")
    bad = [i for i in layers if not 0 <= i < depth]
    if bad:
        raise ShrinkError(f"distill.student_layers: {bad} out of range; the teacher has layers 0..{depth - 1}")
    if len(set(layers)) != len(layers):
        raise ShrinkError(f"distill.student_layers: {layers} repeats a layer")
    prefix = encoder_layers_name(teacher) + "."
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    if isinstance(getattr(config, "layer_types", None), list) and len(config.layer_types) == depth:
        config.layer_types = [config.layer_types[i] for i in layers]
    student = type(teacher)(config)
    source = teacher.state_dict()
    state = {}
    for key in student.state_dict():
        if key.startswith(prefix):
            j, rest = key[len(prefix) :].split(".", 1)
            key_in_teacher = f"{prefix}{layers[int(j)]}.{rest}"
        else:
            key_in_teacher = key
        state[key] = source[key_in_teacher].detach().clone()
    student.load_state_dict(state, strict=True)
    return student


def _student(cfg: DistillConfig, teacher, label_names: list[str], seed: int):
    from shrink.models import check_labels, load_classifier, read_label_names, resolve_model_dir

    seed_everything(seed)
    if cfg.student_checkpoint:
        source = resolve_model_dir(cfg.student_checkpoint)
        labels = read_label_names(source)
        if labels is None:  # a base encoder: give it a fresh head over the dataset's labels
            return load_classifier(source, label_names=label_names)
        check_labels(labels, label_names, f"distill.student_checkpoint {cfg.student_checkpoint}", "the teacher")
        return load_classifier(source)
    return student_from_teacher(teacher, list(cfg.student_layers))


def distill(
    cfg: DistillConfig,
    dataset_dir: str | Path,
    teacher_dir: str | Path,
    logits_dir: str | Path,
    out_dir: str | Path,
    alpha: float,
    temperature: float,
    learning_rate: float,
    depth: int | None = None,
) -> ArtifactMeta:
    """Train one student (one search trial) on the teacher's precomputed logits and the labels.

    The result is a sealed PyTorch artifact whose parent is the teacher; its
    metrics hold val/test accuracy, training time and the trial's settings, which
    is what ``select_student`` ranks on. ``depth`` (a shape-search trial) replaces
    ``cfg.student_layers`` by that many of the teacher's layers (``layers_for_depth``).
    """
    from shrink.models import check_labels, load_pytorch_artifact

    check_trial(alpha, temperature, learning_rate)
    dd, info = load_prepared(dataset_dir)
    teacher, tokenizer, teacher_meta = load_pytorch_artifact(teacher_dir)
    check_labels(teacher_meta.label_names, info.label_names, f"teacher {teacher_dir}", f"dataset {dataset_dir}")
    if depth is not None:
        if cfg.student_checkpoint:
            raise ShrinkError("distill.search.depth: needs student_layers (a student made of teacher layers)")
        cfg = dataclasses.replace(cfg, student_layers=layers_for_depth(depth, teacher.config.num_hidden_layers))
    # alpha = 1 is the plain fine-tuning baseline: no teacher, so neither its transfer set nor its states.
    kd = alpha < 1.0
    targets = load_teacher_logits(
        logits_dir,
        dd,
        teacher_meta,
        augment=cfg.augment if kd else None,
        patient_layers=list(cfg.student_layers) if kd and cfg.patient_weight > 0 else None,
    )
    train_cfg = dataclasses.replace(cfg.train, learning_rate=float(learning_rate))
    student = _student(cfg, teacher, info.label_names, train_cfg.seed)
    del teacher
    if cfg.freeze_word_embeddings:
        student.get_input_embeddings().weight.requires_grad_(False)
    data = encode_splits(tokenizer, dd, train_cfg.max_length)
    if targets.transfer_texts:
        texts = targets.transfer_texts
        extra = encode(tokenizer, texts, np.full(len(texts), UNLABELED), train_cfg.max_length)
        data["train"] = data["train"].concat(extra)
        log.info("transfer set: %d perturbed texts labelled by the teacher", len(texts))
    trial = {"alpha": float(alpha), "temperature": float(temperature), "learning_rate": float(learning_rate)}
    trial |= {"depth": len(cfg.student_layers)} if depth is not None else {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(dataclasses.replace(cfg, train=train_cfg), out / "distill.yaml")
    n_params = sum(p.numel() for p in student.parameters())
    log.info(
        "distilling into %s (%d layers, %.1fM parameters, %.1fM trained): alpha %g, T %g, lr %g",
        cfg.student_checkpoint or f"teacher layers {cfg.student_layers}",
        student.config.num_hidden_layers,
        n_params / 1e6,
        sum(p.numel() for p in student.parameters() if p.requires_grad) / 1e6,
        alpha,
        temperature,
        learning_rate,
    )
    settings = {
        **trial,
        "augment": to_dict(cfg.augment) if targets.transfer_texts else None,
        "patient_weight": cfg.patient_weight if targets.states is not None else 0.0,
        "freeze_word_embeddings": cfg.freeze_word_embeddings,
        "student_checkpoint": cfg.student_checkpoint,
        "student_layers": None if cfg.student_checkpoint else list(cfg.student_layers),
        "train": to_dict(train_cfg),
    }
    return train_and_save(
        student,
        tokenizer,
        data,
        train_cfg,
        out,
        label_names=info.label_names,
        technique="distill",
        settings=settings,
        parent=teacher_meta,
        teacher_logits=targets.train_logits,
        teacher_states=targets.states,
        patient_weight=cfg.patient_weight,
        alpha=alpha,
        temperature=temperature,
        desc="student",
        extra_metrics={**trial, "num_layers": student.config.num_hidden_layers, "parameters": n_params},
    )


# --------------------------------------------------------------------------- search


def select_best_student(student_dirs: list[str | Path], out_dir: str | Path, tolerance: float = 0.0) -> dict[str, Any]:
    """Copy the student with the highest validation accuracy (ties: the first) to ``out_dir``.

    With a ``tolerance`` (``distill.search.select_tolerance``), the shallowest student within
    that much of the best validation accuracy, the most accurate of that depth: fewer layers is
    what the rest of the pipeline is for, and a tenth of a point of validation accuracy is
    noise on CLINC150's 3,100 validation texts.

    Every candidate's hashes are verified before it is ranked, and the copy is
    verified again, so the chosen artifact is byte-for-byte the one measured.
    Returns ``{"index", "trials": [per-trial settings and accuracies], "summary"}``.
    """
    import shutil

    # The component receives the tolerance as a bare float: SearchConfig's own rule checks it.
    from_dict(SearchConfig, {"select_tolerance": tolerance}, "distill.search")
    if not student_dirs:
        raise ShrinkError("select_student: no students to choose from (did every distillation trial fail?)")
    trials = []
    for i, directory in enumerate(student_dirs):
        meta = read_meta(directory)
        if "val_accuracy" not in meta.metrics:
            raise ShrinkError(f"{Path(directory) / META_FILE}: records no val_accuracy; not a distilled student")
        trials.append(
            {
                "trial": i,
                "val_accuracy": float(meta.metrics["val_accuracy"]),
                "test_accuracy": float(meta.metrics.get("test_accuracy", float("nan"))),
                "alpha": float(meta.settings.get("alpha", float("nan"))),
                "temperature": float(meta.settings.get("temperature", float("nan"))),
                "learning_rate": float(meta.settings.get("learning_rate", float("nan"))),
                "num_layers": int(meta.metrics.get("num_layers", 0)),
                "precision": meta.precision,
                "content_hash": meta.content_hash(),
            }
        )
    best = max(t["val_accuracy"] for t in trials)
    # A float margin: a trial exactly ``tolerance`` below the best is within it, however the subtraction rounds.
    eligible = [i for i, t in enumerate(trials) if t["val_accuracy"] >= best - tolerance - 1e-9]
    # Fewest layers first only with a tolerance; then the most accurate, then the first trial.
    index = min(
        eligible, key=lambda i: (trials[i]["num_layers"] if tolerance > 0 else 0, -trials[i]["val_accuracy"], i)
    )
    out = Path(out_dir)
    shutil.copytree(student_dirs[index], out, dirs_exist_ok=True)
    read_meta(out)
    chosen = trials[index]
    summary = (
        f"trial {index} of {len(trials)}: layers={chosen['num_layers']} alpha={chosen['alpha']:g} "
        f"T={chosen['temperature']:g} lr={chosen['learning_rate']:g} val_accuracy={chosen['val_accuracy']:.4f} "
        f"test_accuracy={chosen['test_accuracy']:.4f}"
        + (f" (the shallowest within {tolerance:g} of the best, {best:.4f})" if tolerance > 0 else "")
    )
    for t in trials:
        log.info(
            "trial %d: %d layers, alpha %g, T %g, lr %g: val accuracy %.4f%s",
            t["trial"],
            t["num_layers"],
            t["alpha"],
            t["temperature"],
            t["learning_rate"],
            t["val_accuracy"],
            "  <- chosen" if t["trial"] == index else "",
        )
    return {"index": index, "trials": trials, "summary": summary}
