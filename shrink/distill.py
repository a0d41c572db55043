"""Knowledge distillation: the teacher, its logits, the student, and the training that links them.

The flow is ``train_teacher`` (fine-tune a base encoder, or import a fine-tuned
classifier) -> ``compute_teacher_logits`` (once) -> ``distill`` (one call per
search trial). Teacher logits are computed once and read by every epoch of every
trial: running the teacher again per batch would cost as much as training the
student. Because they are reused, they carry the fingerprint of the texts they
were computed on and the teacher's content hash, and ``distill`` refuses logits
that belong to other data or another teacher instead of silently learning from
misaligned targets.

The student is, by default, the teacher with some encoder layers kept
(DistilBERT's initialisation): it starts from the teacher's knowledge instead of
from scratch, which is most of why a half-depth student can match it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from shrink.artifact import META_FILE, ArtifactMeta, read_meta
from shrink.config import AugmentConfig, DistillConfig, TeacherConfig, TrainConfig, save_yaml, to_dict
from shrink.data import load_prepared, texts_fingerprint
from shrink.errors import ShrinkError
from shrink.logs import log
from shrink.train import (
    UNLABELED,
    Encoded,
    NonFiniteLoss,
    accuracy,
    encode,
    fit,
    kd_loss,
    predict_cls_states,
    predict_logits,
    seed_everything,
    select_device,
)

__all__ = [
    "LOGITS_FILE",
    "LOGITS_INFO",
    "TeacherTargets",
    "check_trial",
    "compute_teacher_logits",
    "distill",
    "encode_splits",
    "from_kfp",
    "kd_loss",
    "load_teacher_logits",
    "select_best_student",
    "select_device",
    "student_from_teacher",
    "train_and_save",
    "train_teacher",
]

LOGITS_FILE = "teacher-logits.safetensors"
LOGITS_INFO = "teacher-logits.json"
LOGITS_SPLITS = ("train", "validation")
TRANSFER = "transfer"
TRANSFER_TEXTS = "transfer-texts.json"


def from_kfp(value: Any) -> Any:
    """Undo KFP's number widening on a dict parameter: integral floats back to ints, recursively.

    KFP passes dict and list parameters as protobuf Structs, where every number is
    a double, so ``epochs: 4`` arrives as ``4.0`` and the typed config loader
    rightly refuses it for an ``int`` field. Float fields accept ints, so turning
    every integral float back into an int is lossless for config loading.
    """
    if isinstance(value, dict):
        return {k: from_kfp(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_kfp(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def check_trial(alpha: float, temperature: float, learning_rate: float) -> None:
    """Reject a trial's settings before any model is loaded."""
    if not 0.0 <= alpha <= 1.0:
        raise ShrinkError(f"trial.alpha: {alpha} must be in [0, 1] (1 = no teacher, 0 = teacher only)")
    if not temperature > 0:
        raise ShrinkError(f"trial.temperature: {temperature} must be > 0")
    if not learning_rate > 0:
        raise ShrinkError(f"trial.learning_rate: {learning_rate} must be > 0")


# --------------------------------------------------------------------------- shared training step


def encode_splits(
    tokenizer, dd, max_length: int, splits=("train", "validation", "test")
) -> dict[str, Encoded]:
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
    log.info(
        "fine-tuning teacher %s on %d examples, %d labels", cfg.base_model, len(data["train"]), len(names)
    )
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
    raise ShrinkError(
        f"{type(model).__name__}: cannot find its {count} encoder layers to build a student from"
    )


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
        raise ShrinkError(
            f"distill.student_layers: {bad} out of range; the teacher has layers 0..{depth - 1}"
        )
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
        check_labels(
            labels, label_names, f"distill.student_checkpoint {cfg.student_checkpoint}", "the teacher"
        )
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
) -> ArtifactMeta:
    """Train one student (one search trial) on the teacher's precomputed logits and the labels.

    The result is a sealed PyTorch artifact whose parent is the teacher; its
    metrics hold val/test accuracy, training time and the trial's settings, which
    is what ``select_student`` ranks on.
    """
    from shrink.models import check_labels, load_pytorch_artifact

    check_trial(alpha, temperature, learning_rate)
    dd, info = load_prepared(dataset_dir)
    teacher, tokenizer, teacher_meta = load_pytorch_artifact(teacher_dir)
    check_labels(
        teacher_meta.label_names, info.label_names, f"teacher {teacher_dir}", f"dataset {dataset_dir}"
    )
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


def select_best_student(student_dirs: list[str | Path], out_dir: str | Path) -> dict[str, Any]:
    """Copy the student with the highest validation accuracy (ties: the first) to ``out_dir``.

    Every candidate's hashes are verified before it is ranked, and the copy is
    verified again, so the chosen artifact is byte-for-byte the one measured.
    Returns ``{"index", "trials": [per-trial settings and accuracies], "summary"}``.
    """
    import shutil

    if not student_dirs:
        raise ShrinkError("select_student: no students to choose from (did every distillation trial fail?)")
    trials = []
    for i, directory in enumerate(student_dirs):
        meta = read_meta(directory)
        if "val_accuracy" not in meta.metrics:
            raise ShrinkError(
                f"{Path(directory) / META_FILE}: records no val_accuracy; not a distilled student"
            )
        trials.append(
            {
                "trial": i,
                "val_accuracy": float(meta.metrics["val_accuracy"]),
                "test_accuracy": float(meta.metrics.get("test_accuracy", float("nan"))),
                "alpha": float(meta.settings.get("alpha", float("nan"))),
                "temperature": float(meta.settings.get("temperature", float("nan"))),
                "learning_rate": float(meta.settings.get("learning_rate", float("nan"))),
                "precision": meta.precision,
                "content_hash": meta.content_hash(),
            }
        )
    index = max(range(len(trials)), key=lambda i: (trials[i]["val_accuracy"], -i))
    out = Path(out_dir)
    shutil.copytree(student_dirs[index], out, dirs_exist_ok=True)
    read_meta(out)
    chosen = trials[index]
    summary = (
        f"trial {index} of {len(trials)}: alpha={chosen['alpha']:g} T={chosen['temperature']:g} "
        f"lr={chosen['learning_rate']:g} val_accuracy={chosen['val_accuracy']:.4f} "
        f"test_accuracy={chosen['test_accuracy']:.4f}"
    )
    for t in trials:
        log.info(
            "trial %d: alpha %g, T %g, lr %g: val accuracy %.4f%s",
            t["trial"],
            t["alpha"],
            t["temperature"],
            t["learning_rate"],
            t["val_accuracy"],
            "  <- chosen" if t["trial"] == index else "",
        )
    return {"index": index, "trials": trials, "summary": summary}
