"""The teacher: fine-tuned (or imported) once per run, its logits computed once for every distillation trial.

The flow is ``train_teacher`` (fine-tune a base encoder, or import a fine-tuned
classifier) -> ``compute_teacher_logits`` (once) -> :func:`shrink.distill.distill`
(one call per search trial). Teacher logits are computed once and read by every
epoch of every trial: running the teacher again per batch would cost as much as
training the student. Because they are reused, they carry the fingerprint of the
texts they were computed on and the teacher's content hash, and
``load_teacher_logits`` refuses logits that belong to other data or another
teacher instead of silently letting a student learn from misaligned targets.
The writer and the reader of that artifact live here together, so its layout is
defined once.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from shrink.artifact import META_FILE, ArtifactMeta, read_meta
from shrink.config import AugmentConfig, TeacherConfig, save_yaml, to_dict
from shrink.data import load_prepared, texts_fingerprint
from shrink.errors import ShrinkError
from shrink.finetune import encode_splits, train_and_save
from shrink.logs import log
from shrink.train import UNLABELED, accuracy, encode, predict_cls_states, predict_logits, seed_everything, select_device

LOGITS_FILE = "teacher-logits.safetensors"
LOGITS_INFO = "teacher-logits.json"
LOGITS_SPLITS = ("train", "validation")
TRANSFER = "transfer"
TRANSFER_TEXTS = "transfer-texts.json"


# --------------------------------------------------------------------------- teacher


def train_teacher(cfg: TeacherConfig, dataset_dir: str | Path, out_dir: str | Path) -> ArtifactMeta:
    """Import a fine-tuned teacher (``cfg.checkpoint``) or fine-tune ``cfg.base_model`` on the dataset.

    Either way the result is a sealed PyTorch artifact whose labels are the
    dataset's, in the dataset's order, with validation and test accuracy in its
    metrics: every later step compares against these numbers.
    """
    from shrink.models import (
        check_labels,
        load_classifier,
        load_tokenizer,
        read_label_names,
        resolve_model_dir,
        save_classifier,
    )

    dd, info = load_prepared(dataset_dir)
    names = info.label_names
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.checkpoint:
        source = resolve_model_dir(cfg.checkpoint)
        model_labels = read_label_names(source)
        if model_labels is None:
            raise ShrinkError(
                f"teacher.checkpoint {cfg.checkpoint}: not a fine-tuned sequence classifier "
                "(no label names); "
                "set teacher.base_model to fine-tune it instead"
            )
        check_labels(model_labels, names, f"teacher.checkpoint {cfg.checkpoint}", f"dataset {dataset_dir}")
        parent = read_meta(source) if (source / META_FILE).is_file() else None
        model, tokenizer = load_classifier(source), load_tokenizer(source)
        data = encode_splits(tokenizer, dd, cfg.train.max_length, ("validation", "test"))
        device = select_device(cfg.train.device)
        model.to(device)
        metrics = {
            f"{'val' if s == 'validation' else s}_accuracy": accuracy(
                predict_logits(model, enc, cfg.train.batch_size * 2, device, desc=f"teacher {s}"), enc.labels
            )
            for s, enc in data.items()
        }
        model.to("cpu")
        save_yaml(cfg, out / "teacher.yaml")
        meta = save_classifier(
            model,
            tokenizer,
            out,
            label_names=names,
            technique="import",
            settings={"checkpoint": cfg.checkpoint, "max_length": cfg.train.max_length},
            parent=parent,
            metrics=metrics,
        )
        log.info(
            "teacher imported from %s: val accuracy %.4f, test accuracy %.4f",
            cfg.checkpoint,
            metrics["val_accuracy"],
            metrics["test_accuracy"],
        )
        return meta

    source = resolve_model_dir(cfg.base_model)
    seed_everything(cfg.train.seed)  # the fresh classifier head is drawn from torch's RNG
    model = load_classifier(source, label_names=names, ignore_mismatched_sizes=True)
    tokenizer = load_tokenizer(source)
    data = encode_splits(tokenizer, dd, cfg.train.max_length)
    save_yaml(cfg, out / "teacher.yaml")
    log.info("fine-tuning teacher %s on %d examples, %d labels", cfg.base_model, len(data["train"]), len(names))
    return train_and_save(
        model,
        tokenizer,
        data,
        cfg.train,
        out,
        label_names=names,
        technique="fine-tune",
        settings={"base_model": cfg.base_model, "train": to_dict(cfg.train)},
        desc="teacher",
    )


# --------------------------------------------------------------------------- teacher logits


def compute_teacher_logits(
    teacher_dir: str | Path,
    dataset_dir: str | Path,
    out_dir: str | Path,
    batch_size: int = 64,
    augment: AugmentConfig | None = None,
    patient_layers: list[int] | None = None,
) -> dict[str, Any]:
    """Run the teacher once over train and validation (and the transfer set); write the logits.

    Writes ``teacher-logits.safetensors`` (one float32 [examples, labels] tensor per
    split) and ``teacher-logits.json`` (text fingerprints, counts, label names, the
    teacher's content hash and its accuracy per split). With ``augment.copies > 0``
    the perturbed training texts of :mod:`shrink.augment` are written to
    ``transfer-texts.json`` and their logits as the ``transfer`` tensor: labelling
    them is the teacher's job, and doing it here, once, keeps the trials cheap.
    With ``patient_layers`` the teacher's [CLS] state after each of those layers
    is stored too (``<split>.cls``, float16), for patient distillation.
    Returns the JSON's content.
    """
    from safetensors.numpy import save_file

    from shrink.augment import augment_texts
    from shrink.models import check_labels, load_pytorch_artifact

    model, tokenizer, meta = load_pytorch_artifact(teacher_dir)
    dd, info = load_prepared(dataset_dir)
    check_labels(meta.label_names, info.label_names, f"teacher {teacher_dir}", f"dataset {dataset_dir}")
    max_length = int(meta.settings.get("max_length", 128))
    device = select_device("auto")
    model.to(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors, splits = {}, {}
    start = time.monotonic()
    if patient_layers:
        depth = model.config.num_hidden_layers
        if not all(0 <= i < depth for i in patient_layers):
            raise ShrinkError(f"distill.student_layers: {patient_layers} out of range; the teacher has {depth}")

    def run(enc, name):
        desc = f"teacher logits {name}"
        if patient_layers and name != "validation":  # the states train the student; validation only ranks it
            logits, tensors[f"{name}.cls"] = predict_cls_states(model, enc, patient_layers, batch_size, device, desc)
            return logits
        return predict_logits(model, enc, batch_size, device, desc)

    for split in LOGITS_SPLITS:
        texts = dd[split]["text"]
        enc = encode(tokenizer, texts, dd[split]["label"], max_length)
        tensors[split] = run(enc, split)
        splits[split] = {
            "fingerprint": texts_fingerprint(texts),
            "count": len(texts),
            "teacher_accuracy": accuracy(tensors[split], enc.labels),
        }
    transfer = None
    augment = augment or AugmentConfig()
    if augment.copies > 0:
        texts = augment_texts(list(dd["train"]["text"]), augment, tokenizer.mask_token or "[MASK]")
        enc = encode(tokenizer, texts, np.full(len(texts), UNLABELED), max_length)
        tensors[TRANSFER] = run(enc, TRANSFER)
        (out / TRANSFER_TEXTS).write_text(json.dumps(texts, ensure_ascii=False))
        oos = meta.label_names.index("oos") if "oos" in meta.label_names else None
        transfer = {
            "augment": to_dict(augment),
            "fingerprint": texts_fingerprint(texts),
            "count": len(texts),
            "source_fingerprint": splits["train"]["fingerprint"],
            "teacher_oos_share": None if oos is None else float((tensors[TRANSFER].argmax(-1) == oos).mean()),
        }
    save_file(tensors, str(out / LOGITS_FILE))
    content = {
        "teacher_content_hash": meta.content_hash(),
        "label_names": meta.label_names,
        "max_length": max_length,
        "splits": splits,
        "transfer": transfer,
        "patient_layers": list(patient_layers) if patient_layers else None,
        "seconds": round(time.monotonic() - start, 2),
    }
    (out / LOGITS_INFO).write_text(json.dumps(content, indent=2))
    log.info(
        "teacher logits for %s in %.1fs (teacher train accuracy %.4f, validation %.4f)",
        ", ".join(f"{s}: {v['count']}" for s, v in {**splits, TRANSFER: transfer or {"count": 0}}.items()),
        content["seconds"],
        splits["train"]["teacher_accuracy"],
        splits["validation"]["teacher_accuracy"],
    )
    return content


@dataclasses.dataclass
class TeacherTargets:
    """What a student learns from, read from a teacher_logits artifact and checked against its inputs.

    ``train_logits`` (and ``states``) hold the training split's rows followed by the
    transfer set's, aligned with the training split joined to ``transfer_texts``.
    """

    train_logits: np.ndarray
    validation_logits: np.ndarray
    transfer_texts: list[str] = dataclasses.field(default_factory=list)
    states: np.ndarray | None = None


def load_teacher_logits(
    logits_dir: str | Path,
    dd,
    teacher_meta: ArtifactMeta,
    augment: AugmentConfig | None = None,
    patient_layers: list[int] | None = None,
) -> TeacherTargets:
    """The teacher's targets for these texts, after checking they belong to them and to this teacher.

    ``augment`` (copies > 0) asks for the transfer set and ``patient_layers`` for
    the [CLS] states: both are made by the teacher_logits step, and a distillation
    config that asks for a different set (other copies, probabilities or seed) or
    other layers must not silently train on what happens to be there, so a
    mismatch is an error. The info file and the tensors are each read once.
    """
    from safetensors.numpy import load_file

    root = Path(logits_dir)
    info_path, data_path = root / LOGITS_INFO, root / LOGITS_FILE
    for path in (info_path, data_path):
        if not path.is_file():
            raise ShrinkError(f"{path}: teacher logits missing (run the teacher_logits step)")
    try:
        info = json.loads(info_path.read_text())
        splits = info["splits"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ShrinkError(f"{info_path}: not a teacher-logits description: {exc}") from None
    if info.get("teacher_content_hash") != teacher_meta.content_hash():
        raise ShrinkError(
            f"{info_path}: computed by teacher {str(info.get('teacher_content_hash'))[:12]}…, "
            f"not by the given teacher "
            f"{teacher_meta.content_hash()[:12]}…; recompute the teacher logits"
        )
    tensors = load_file(str(data_path))

    def rows(name: str, count: int) -> np.ndarray:
        shape = tensors[name].shape if name in tensors else None
        if shape != (count, teacher_meta.num_labels):
            raise ShrinkError(
                f"{data_path}: {name} logits have shape {shape}, expected ({count}, {teacher_meta.num_labels})"
            )
        return tensors[name]

    logits = {}
    for split in LOGITS_SPLITS:
        texts = dd[split]["text"]
        recorded = splits.get(split, {})
        if recorded.get("fingerprint") != texts_fingerprint(texts):
            raise ShrinkError(
                f"{info_path}: the {split} logits were computed on other texts than this dataset's "
                f"{split} split ({recorded.get('count')} vs {len(texts)} examples, fingerprints differ); "
                "recompute the teacher logits"
            )
        logits[split] = rows(split, len(texts))
    targets = TeacherTargets(logits["train"], logits["validation"])

    if augment is not None and augment.copies > 0:
        recorded = info.get("transfer")
        if not recorded:
            raise ShrinkError(
                f"{info_path}: distill.augment asks for a transfer set ({augment.copies} copies) but these logits "
                "have none; give the teacher_logits step the same augment settings"
            )
        if recorded.get("augment") != to_dict(augment):
            raise ShrinkError(
                f"{info_path}: the transfer set was made with {recorded.get('augment')}, "
                f"but distill.augment is {to_dict(augment)}; recompute the teacher logits"
            )
        texts_path = root / TRANSFER_TEXTS
        try:
            texts = json.loads(texts_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ShrinkError(f"{texts_path}: transfer-set texts unreadable: {exc}") from None
        if texts_fingerprint(texts) != recorded.get("fingerprint"):
            raise ShrinkError(f"{texts_path}: the texts do not match the fingerprint recorded in {info_path}")
        targets.transfer_texts = texts
        targets.train_logits = np.concatenate([targets.train_logits, rows(TRANSFER, len(texts))])

    if patient_layers:
        if info.get("patient_layers") != list(patient_layers):
            raise ShrinkError(
                f"{info_path}: teacher [CLS] states were stored for layers {info.get('patient_layers')}, but the "
                f"student keeps {list(patient_layers)}; give the teacher_logits step the same distill section"
            )
        parts = ["train.cls", *([f"{TRANSFER}.cls"] if targets.transfer_texts else [])]
        targets.states = np.concatenate([tensors[p] for p in parts])
    return targets
