"""Knowledge distillation on the real CLINC150 slice with a tiny BERT: loss, trainer, teacher, student."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shrink.artifact import read_meta
from shrink.augment import augment_texts
from shrink.config import AugmentConfig, DataConfig, DistillConfig, SearchConfig, TeacherConfig, TrainConfig, from_dict
from shrink.data import load_prepared, prepare
from shrink.distill import distill, kd_loss, student_from_teacher
from shrink.errors import ShrinkError
from shrink.finetune import encode_splits, train_and_save
from shrink.models import load_classifier, load_pytorch_artifact, load_tokenizer, tiny_bert
from shrink.runtime import open_classifier
from shrink.teacher import LOGITS_FILE, LOGITS_INFO, TRANSFER_TEXTS, compute_teacher_logits, train_teacher
from shrink.train import (
    THREADS_ENV,
    UNLABELED,
    cpu_cores,
    encode,
    fit,
    length_grouped_batches,
    patient_loss,
    select_device,
)

# The conftest slice: ten CLINC150 intents plus oos (read from the data, not imported: tests/ is no package).
N_LABELS = 11
CHANCE = 1 / N_LABELS
# Settings that make the 64-wide BERT learn the 11-class slice in seconds.
FAST = {"batch_size": 16, "learning_rate": 3e-3, "early_stopping_patience": 0, "max_length": 32}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tests share the machine; one torch thread avoids oversubscription (restored afterwards)."""
    before = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(THREADS_ENV, "1")
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, clinc_slice, tiny_model_dir):
    cfg = TeacherConfig(base_model=str(tiny_model_dir), train=TrainConfig(epochs=6, **FAST))
    out = tmp_path_factory.mktemp("teacher") / "teacher"
    train_teacher(cfg, clinc_slice, out)
    return out


@pytest.fixture(scope="module")
def logits_dir(tmp_path_factory, clinc_slice, teacher_dir):
    out = tmp_path_factory.mktemp("logits") / "logits"
    compute_teacher_logits(teacher_dir, clinc_slice, out)
    return out


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory, clinc_slice, teacher_dir, logits_dir):
    cfg = DistillConfig(student_layers=[0, 2], train=TrainConfig(epochs=3, **FAST))
    out = tmp_path_factory.mktemp("student") / "student"
    distill(cfg, clinc_slice, teacher_dir, logits_dir, out, alpha=0.5, temperature=2.0, learning_rate=3e-3)
    return out


def _runtime_accuracy(model_dir, clinc_slice, split):
    """Accuracy measured the way serving sees the model: through shrink.runtime, from the sealed files."""
    dd, _ = load_prepared(clinc_slice)
    pred, _ = open_classifier(model_dir).predict_all(dd[split]["text"])
    return float((pred == np.asarray(dd[split]["label"])).mean()), len(pred)


# --------------------------------------------------------------------------- loss


def test_kd_loss_matches_hand_computation():
    s = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, -0.3]])
    t = np.array([[1.0, 0.0, 3.0], [-2.0, 1.0, 0.0]])
    y = np.array([0, 2])
    alpha, temp = 0.3, 2.5

    def softmax(x):
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    ce = -np.mean(np.log(softmax(s)[np.arange(2), y]))
    p_t, p_s = softmax(t / temp), softmax(s / temp)
    kl = np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=1))
    expected = alpha * ce + (1 - alpha) * temp**2 * kl

    def as_t(a, dtype=torch.float32):
        return torch.tensor(a, dtype=dtype)

    got = kd_loss(as_t(s), as_t(t), as_t(y, torch.long), alpha, temp)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # alpha = 1 is plain cross-entropy, whatever the teacher says (or without one).
    ce_torch = F.cross_entropy(as_t(s), as_t(y, torch.long))
    assert kd_loss(as_t(s), as_t(t), as_t(y, torch.long), 1.0, temp).item() == pytest.approx(ce_torch.item())
    assert kd_loss(as_t(s), None, as_t(y, torch.long), 1.0, temp).item() == pytest.approx(ce)
    # alpha = 0 is the soft-target term alone, scaled by T^2; it vanishes when student == teacher.
    assert kd_loss(as_t(s), as_t(t), as_t(y, torch.long), 0.0, temp).item() == pytest.approx(temp**2 * kl, rel=1e-5)
    assert kd_loss(as_t(t), as_t(t), as_t(y, torch.long), 0.0, temp).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_loss_on_transfer_rows_is_the_soft_term_alone():
    s = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, -0.3], [1.0, 1.0, -2.0]])
    t = torch.tensor([[1.0, 0.0, 3.0], [-2.0, 1.0, 0.0], [0.0, 3.0, 0.0]])
    y = torch.tensor([0, 2, UNLABELED])
    alpha, temp = 0.3, 2.5
    per_row = [kd_loss(s[i : i + 1], t[i : i + 1], y[i : i + 1].clamp(min=0), alpha, temp) for i in range(3)]
    soft_only = kd_loss(s[2:], t[2:], y[2:].clamp(min=0), 0.0, temp)
    expected = (per_row[0] + per_row[1] + soft_only) / 3
    assert kd_loss(s, t, y, alpha, temp).item() == pytest.approx(expected.item(), rel=1e-5)
    assert soft_only.item() != pytest.approx(per_row[2].item(), rel=1e-3)  # the label really is ignored
    with pytest.raises(ShrinkError, match="unlabeled"):
        kd_loss(s, t, y, 1.0, temp)


def test_transfer_set_is_deterministic_and_perturbs_the_texts():
    texts = ["what is my bank balance", "book a table for two at eight", "play some jazz", "hi"]
    cfg = AugmentConfig(copies=3, seed=7)
    out = augment_texts(texts, cfg, "[MASK]")
    assert out == augment_texts(texts, cfg, "[MASK]") and len(out) == 12
    assert out != augment_texts(texts, AugmentConfig(copies=3, seed=8), "[MASK]")
    vocabulary = {w for t in texts for w in t.split()} | {"[MASK]"}
    assert all(t and set(t.split()) <= vocabulary for t in out)
    assert sum(a != b for a, b in zip(out, texts * 3, strict=True)) >= 4  # something was perturbed
    # With every probability at zero the copies are the texts themselves.
    still = AugmentConfig(copies=2, mask_prob=0, replace_prob=0, ngram_prob=0)
    assert augment_texts(texts, still, "[MASK]") == texts * 2
    # n-grams only: every copy is a contiguous piece of its text.
    cut = augment_texts(texts, AugmentConfig(copies=1, mask_prob=0, replace_prob=0, ngram_prob=1.0), "[MASK]")
    assert all(c in t for c, t in zip(cut, texts, strict=True)) and cut[0] != texts[0]
    with pytest.raises(ShrinkError, match="distill.augment.replace_prob: mask_prob \\+ replace_prob"):
        from_dict(DistillConfig, {"augment": {"mask_prob": 0.6, "replace_prob": 0.6}}, "distill")


def test_distillation_with_a_transfer_set(tmp_path, clinc_slice, teacher_dir, logits_dir):
    augment = AugmentConfig(copies=1, seed=3)
    logits = tmp_path / "logits-transfer"
    info = compute_teacher_logits(teacher_dir, clinc_slice, logits, augment=augment)
    dd, _ = load_prepared(clinc_slice)
    texts = json.loads((logits / TRANSFER_TEXTS).read_text())
    assert info["transfer"]["count"] == len(texts) == len(dd["train"])
    assert texts == augment_texts(list(dd["train"]["text"]), augment, "[MASK]")
    # The transfer logits are the teacher's answers on those texts, as served.
    from safetensors.numpy import load_file

    _, served = open_classifier(teacher_dir).predict_all(texts)
    np.testing.assert_allclose(load_file(str(logits / LOGITS_FILE))["transfer"], served, atol=1e-4)

    cfg = DistillConfig(student_layers=[0, 2], train=TrainConfig(epochs=1, **FAST), augment=augment)
    meta = distill(
        cfg, clinc_slice, teacher_dir, logits, tmp_path / "s", alpha=0.5, temperature=2.0, learning_rate=3e-3
    )
    assert meta.settings["augment"]["copies"] == 1
    assert meta.metrics["steps"] == math.ceil(2 * len(dd["train"]) / FAST["batch_size"])  # train + transfer set
    # A config asking for another transfer set, or one the logits lack, is refused before training.
    other = DistillConfig(student_layers=[0, 2], train=TrainConfig(epochs=1, **FAST), augment=AugmentConfig(copies=2))
    with pytest.raises(ShrinkError, match="transfer set was made with"):
        distill(other, clinc_slice, teacher_dir, logits, tmp_path / "x", 0.5, 2.0, 3e-3)
    with pytest.raises(ShrinkError, match="these logits have none"):
        distill(cfg, clinc_slice, teacher_dir, logits_dir, tmp_path / "y", 0.5, 2.0, 3e-3)
    # alpha = 1 (the plain fine-tuning baseline of a search) trains on the labelled split only.
    baseline = distill(cfg, clinc_slice, teacher_dir, logits_dir, tmp_path / "z", 1.0, 2.0, 3e-3)
    assert baseline.settings["augment"] is None
    assert baseline.metrics["steps"] == math.ceil(len(dd["train"]) / FAST["batch_size"])
    (logits / TRANSFER_TEXTS).write_text(json.dumps(texts[:-1]))
    with pytest.raises(ShrinkError, match="do not match the fingerprint"):
        distill(cfg, clinc_slice, teacher_dir, logits, tmp_path / "w", 0.5, 2.0, 3e-3)


def test_patient_loss_matches_hand_computation():
    s = torch.tensor([[[3.0, 4.0], [1.0, 0.0]], [[0.0, 2.0], [1.0, 1.0]]])  # [batch 2, layers 2, hidden 2]
    t = torch.tensor([[[4.0, 3.0], [0.0, 5.0]], [[0.0, 7.0], [2.0, 2.0]]])
    # Row 0: |(.6,.8)-(.8,.6)|^2 = .08, |(1,0)-(0,1)|^2 = 2; row 1: both pairs point the same way: 0.
    assert patient_loss(s, t).item() == pytest.approx((0.08 + 2.0 + 0.0) / 2, rel=1e-5)
    assert patient_loss(t, t).item() == pytest.approx(0.0, abs=1e-6)


def test_patient_distillation_end_to_end(tmp_path, clinc_slice, teacher_dir):
    from safetensors.numpy import load_file

    logits = tmp_path / "logits-patient"
    info = compute_teacher_logits(teacher_dir, clinc_slice, logits, patient_layers=[1, 3])
    assert info["patient_layers"] == [1, 3]
    tensors = load_file(str(logits / LOGITS_FILE))
    dd, _ = load_prepared(clinc_slice)
    teacher = load_classifier(teacher_dir).eval()
    assert tensors["train.cls"].shape == (len(dd["train"]), 2, teacher.config.hidden_size)
    # The stored states are the teacher's [CLS] after layers 1 and 3 for the first training text.
    tok = load_tokenizer(teacher_dir)
    with torch.no_grad():
        out = teacher(**tok(dd["train"]["text"][:1], return_tensors="pt"), output_hidden_states=True)
    want = torch.stack([out.hidden_states[2][0, 0], out.hidden_states[4][0, 0]]).numpy()
    np.testing.assert_allclose(tensors["train.cls"][0].astype(np.float32), want, rtol=2e-2, atol=2e-2)

    cfg = DistillConfig(student_layers=[1, 3], train=TrainConfig(epochs=3, **FAST), patient_weight=10.0)
    meta = distill(cfg, clinc_slice, teacher_dir, logits, tmp_path / "s", 0.5, 2.0, 3e-3)
    assert meta.settings["patient_weight"] == 10.0
    assert meta.metrics["val_accuracy"] > 3 * CHANCE
    # The term takes part in training: the same run without it ends with other weights.
    plain = distill(
        dataclasses.replace(cfg, patient_weight=0.0), clinc_slice, teacher_dir, logits, tmp_path / "p", 0.5, 2.0, 3e-3
    )
    assert plain.settings["patient_weight"] == 0.0
    assert plain.files["model.safetensors"] != meta.files["model.safetensors"]
    # States stored for other layers than the student keeps are refused before training.
    other = DistillConfig(student_layers=[0, 2], train=TrainConfig(epochs=1, **FAST), patient_weight=10.0)
    with pytest.raises(ShrinkError, match=r"stored for layers \[1, 3\], but the student keeps \[0, 2\]"):
        distill(other, clinc_slice, teacher_dir, logits, tmp_path / "x", 0.5, 2.0, 3e-3)
    with pytest.raises(ShrinkError, match="needs student_layers"):
        from_dict(DistillConfig, {"student_checkpoint": "x", "patient_weight": 1.0}, "distill")


@pytest.mark.parametrize(
    ("alpha", "temp", "match"), [(1.5, 2.0, "alpha"), (-0.1, 2.0, "alpha"), (0.5, 0.0, "temperature")]
)
def test_kd_loss_rejects_bad_settings(alpha, temp, match):
    x = torch.zeros(2, 3)
    with pytest.raises(ShrinkError, match=match):
        kd_loss(x, x, torch.zeros(2, dtype=torch.long), alpha, temp)


# --------------------------------------------------------------------------- device, batching, determinism


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the CUDA-absent path")
def test_select_device_without_cuda_uses_every_core(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert select_device("auto").type == "cpu"
    assert torch.get_num_threads() == cpu_cores()
    monkeypatch.setenv(THREADS_ENV, "1")
    assert select_device("cpu").type == "cpu"
    assert torch.get_num_threads() == 1
    with pytest.raises(ShrinkError, match="no CUDA device"):
        select_device("cuda")
    monkeypatch.setenv(THREADS_ENV, "many")
    with pytest.raises(ShrinkError, match=THREADS_ENV):
        select_device("cpu")


def test_length_grouped_batches_cover_every_example_once_with_less_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=1000)
    batches = length_grouped_batches(lengths, 16, np.random.default_rng(1))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    assert all(len(b) <= 16 for b in batches)

    def padded(bs):
        return sum(len(b) * lengths[b].max() for b in bs)

    plain = np.random.default_rng(1).permutation(1000)
    random_batches = [plain[i : i + 16] for i in range(0, 1000, 16)]
    assert padded(batches) < 0.75 * padded(random_batches)
    # A new epoch (the generator moves on) gives a different order.
    gen = np.random.default_rng(2)
    first, second = length_grouped_batches(lengths, 16, gen), length_grouped_batches(lengths, 16, gen)
    assert not np.array_equal(np.concatenate(first), np.concatenate(second))


def _tiny_data(clinc_slice, tiny_model_dir, max_length=32):
    dd, info = load_prepared(clinc_slice)
    return encode_splits(load_tokenizer(tiny_model_dir), dd, max_length), info


def test_training_is_deterministic_for_a_seed(clinc_slice, tiny_model_dir):
    data, _ = _tiny_data(clinc_slice, tiny_model_dir)

    def run(seed):
        model = load_classifier(tiny_model_dir)
        cfg = TrainConfig(epochs=1, max_steps=4, seed=seed, device="cpu", **FAST)
        fit(model, data["train"], data["validation"], cfg)
        return model.state_dict()

    a, b, c = run(1), run(1), run(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_early_stopping_stops_when_validation_stops_improving(clinc_slice, tiny_model_dir):
    data, _ = _tiny_data(clinc_slice, tiny_model_dir)
    model = load_classifier(tiny_model_dir)
    # A learning rate too small to change any prediction: validation accuracy never improves after epoch 1.
    cfg = TrainConfig(epochs=5, batch_size=32, learning_rate=1e-12, early_stopping_patience=1, max_length=32)
    result = fit(model, data["train"], data["validation"], cfg)
    assert result.stopped_early
    assert (result.epochs_run, result.best_epoch) == (2, 1)
    assert [h["epoch"] for h in result.history] == [1, 2]


def _poison_after(model, steps):
    """Make the (real) classifier output NaN from training step ``steps + 1`` on: a numeric blow-up."""
    seen = {"n": 0}

    def hook(module, inputs, output):
        if module.training:
            seen["n"] += 1
            if seen["n"] > steps:
                return output * float("nan")
        return output

    return model.classifier.register_forward_hook(hook)


def test_non_finite_loss_stops_and_keeps_best_checkpoint(tmp_path, clinc_slice, tiny_model_dir):
    data, info = _tiny_data(clinc_slice, tiny_model_dir)
    steps_per_epoch = math.ceil(len(data["train"]) / FAST["batch_size"])
    model = load_classifier(tiny_model_dir)
    _poison_after(model, steps_per_epoch + 3)  # epoch 1 completes, epoch 2 diverges
    cfg = TrainConfig(epochs=3, **FAST)
    out = tmp_path / "diverged"
    with pytest.raises(ShrinkError, match=r"non-finite loss \(nan\) at epoch 2.*best checkpoint so far: epoch 1"):
        train_and_save(
            model,
            load_tokenizer(tiny_model_dir),
            data,
            cfg,
            out,
            label_names=info.label_names,
            technique="fine-tune",
            settings={},
        )
    meta = read_meta(out)
    assert "non-finite" in meta.extra["incomplete"]
    assert meta.metrics["best_epoch"] == 1
    assert all(torch.isfinite(p).all() for p in load_classifier(out).parameters())
    # The saved weights are epoch 1's: they reproduce the validation accuracy recorded for it.
    acc, n = _runtime_accuracy(out, clinc_slice, "validation")
    assert acc == pytest.approx(meta.metrics["val_accuracy"], abs=1.5 / n)

    model = load_classifier(tiny_model_dir)
    _poison_after(model, 0)
    out = tmp_path / "diverged-at-once"
    with pytest.raises(ShrinkError, match="nothing kept"):
        train_and_save(
            model,
            load_tokenizer(tiny_model_dir),
            data,
            cfg,
            out,
            label_names=info.label_names,
            technique="fine-tune",
            settings={},
        )
    assert not (out / "shrink.json").exists()


@pytest.mark.gpu
def test_training_runs_on_cuda(clinc_slice, tiny_model_dir):
    data, _ = _tiny_data(clinc_slice, tiny_model_dir)
    model = load_classifier(tiny_model_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(epochs=1, max_steps=5, device="cuda", **FAST)
    result = fit(model, data["train"], data["validation"], cfg, device=select_device("cuda"))
    assert result.device.startswith("cuda") and result.steps == 5
    assert next(model.parameters()).is_cuda
    after = {k: v.cpu() for k, v in model.state_dict().items()}
    assert not all(torch.equal(before[k], after[k]) for k in before)
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())


# --------------------------------------------------------------------------- teacher


def test_fine_tuned_teacher_learns_the_task(teacher_dir, clinc_slice):
    meta = read_meta(teacher_dir)
    assert meta.technique == "fine-tune" and meta.format == "pytorch"
    assert meta.label_names == load_prepared(clinc_slice)[1].label_names
    assert meta.metrics["val_accuracy"] > 4 * CHANCE
    assert (teacher_dir / "teacher.yaml").is_file() and "teacher.yaml" in meta.files
    acc, n = _runtime_accuracy(teacher_dir, clinc_slice, "test")
    assert acc == pytest.approx(meta.metrics["test_accuracy"], abs=1.5 / n)
    assert acc > 4 * CHANCE


def test_import_teacher_checks_labels_and_keeps_lineage(tmp_path, clinc_slice, teacher_dir, minilm_dir):
    out = tmp_path / "imported"
    meta = train_teacher(TeacherConfig(checkpoint=str(teacher_dir)), clinc_slice, out)
    teacher = read_meta(teacher_dir)
    assert meta.technique == "import"
    assert meta.parent["content_hash"] == teacher.content_hash()
    n_val = len(load_prepared(clinc_slice)[0]["validation"])
    assert meta.metrics["val_accuracy"] == pytest.approx(teacher.metrics["val_accuracy"], abs=1.5 / n_val)

    labels = load_prepared(clinc_slice)[1].label_names
    other = tiny_bert(labels[:-1] + ["something_else"], minilm_dir, tmp_path / "other")
    with pytest.raises(ShrinkError, match="label names disagree"):
        train_teacher(TeacherConfig(checkpoint=str(other)), clinc_slice, tmp_path / "bad")
    with pytest.raises(ShrinkError, match="not a fine-tuned sequence classifier"):
        train_teacher(TeacherConfig(checkpoint=str(minilm_dir)), clinc_slice, tmp_path / "bad2")


def test_teacher_logits_are_the_teachers(logits_dir, teacher_dir, clinc_slice):
    from safetensors.numpy import load_file

    info = json.loads((logits_dir / LOGITS_INFO).read_text())
    tensors = load_file(str(logits_dir / LOGITS_FILE))
    dd, _ = load_prepared(clinc_slice)
    assert info["teacher_content_hash"] == read_meta(teacher_dir).content_hash()
    assert tensors["train"].shape == (len(dd["train"]), N_LABELS)
    _, runtime_logits = open_classifier(teacher_dir).predict_all(dd["validation"]["text"])
    np.testing.assert_allclose(tensors["validation"], runtime_logits, atol=1e-4)


# --------------------------------------------------------------------------- student


def test_student_copies_exactly_the_chosen_layers(tiny_model_dir):
    teacher = load_classifier(tiny_model_dir)
    student = student_from_teacher(teacher, [3, 1])
    assert student.config.num_hidden_layers == 2 and len(student.bert.encoder.layer) == 2
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for key, value in s_state.items():
        if ".encoder.layer." in key:
            j, rest = key.split(".encoder.layer.")[1].split(".", 1)
            source = f"bert.encoder.layer.{[3, 1][int(j)]}.{rest}"
        else:
            source = key
        assert torch.equal(value, t_state[source]), key
    # Sanity: the layers really differ, so the comparison above could fail.
    assert not torch.equal(
        s_state["bert.encoder.layer.0.output.dense.weight"],
        t_state["bert.encoder.layer.0.output.dense.weight"],
    )
    ids = torch.tensor([[101, 2054, 2003, 102]])
    assert student(input_ids=ids).logits.shape == (1, N_LABELS)


@pytest.mark.parametrize(("layers", "match"), [([0, 4], "out of range"), ([1, 1], "repeats"), ([], "at least one")])
def test_student_layer_indices_are_checked(tiny_model_dir, layers, match):
    with pytest.raises(ShrinkError, match=match):
        student_from_teacher(load_classifier(tiny_model_dir), layers)


def test_distilled_student_learns(student_dir, teacher_dir, clinc_slice):
    meta = read_meta(student_dir)
    teacher = read_meta(teacher_dir)
    assert meta.technique == "distill"
    assert meta.parent["content_hash"] == teacher.content_hash()
    assert meta.settings["student_layers"] == [0, 2]
    assert {k: meta.metrics[k] for k in ("alpha", "temperature", "learning_rate")} == {
        "alpha": 0.5,
        "temperature": 2.0,
        "learning_rate": 3e-3,
    }
    assert meta.metrics["val_accuracy"] > 4 * CHANCE and meta.metrics["train_seconds"] > 0
    model, _, _ = load_pytorch_artifact(student_dir)
    assert model.config.num_hidden_layers == 2
    acc, n = _runtime_accuracy(student_dir, clinc_slice, "test")
    assert acc == pytest.approx(meta.metrics["test_accuracy"], abs=1.5 / n)


def test_soft_targets_alone_teach_a_random_student(tmp_path, clinc_slice, teacher_dir, logits_dir, tiny_model_dir):
    """alpha = 0: the student never sees a label, only the teacher's logits, and still learns the task."""
    cfg = DistillConfig(student_checkpoint=str(tiny_model_dir), train=TrainConfig(epochs=5, **FAST))
    meta = distill(
        cfg,
        clinc_slice,
        teacher_dir,
        logits_dir,
        tmp_path / "s",
        alpha=0.0,
        temperature=2.0,
        learning_rate=3e-3,
    )
    assert meta.metrics["val_accuracy"] > 4 * CHANCE
    dd, _ = load_prepared(clinc_slice)
    student_pred, _ = open_classifier(tmp_path / "s").predict_all(dd["validation"]["text"])
    teacher_pred, _ = open_classifier(teacher_dir).predict_all(dd["validation"]["text"])
    assert (student_pred == teacher_pred).mean() > 0.6  # chance agreement is about 1/11


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("trial", "match"),
    [
        ({"alpha": 1.5, "temperature": 2.0, "learning_rate": 1e-3}, r"alpha: 1.5 must be in \[0, 1\]"),
        ({"alpha": 0.5, "temperature": 0.0, "learning_rate": 1e-3}, "temperature: 0.0 must be > 0"),
        ({"alpha": 0.5, "temperature": 2.0, "learning_rate": 0.0}, "learning_rate"),
    ],
)
def test_bad_trial_settings_are_refused(tmp_path, clinc_slice, teacher_dir, logits_dir, trial, match):
    with pytest.raises(ShrinkError, match=match):
        distill(DistillConfig(), clinc_slice, teacher_dir, logits_dir, tmp_path / "s", **trial)


def test_bad_search_and_layer_configs_are_refused():
    with pytest.raises(ShrinkError, match="search space is empty"):
        from_dict(SearchConfig, {"alpha": []}, "distill.search")
    with pytest.raises(ShrinkError, match=r"student_layers: \[1, 1\]: repeats a layer"):
        from_dict(DistillConfig, {"student_layers": [1, 1]}, "distill")
    with pytest.raises(ShrinkError, match="early_stopping_patience"):
        from_dict(TrainConfig, {"early_stopping_patience": -1}, "train")


def test_layers_beyond_the_teacher_are_refused(tmp_path, clinc_slice, teacher_dir, logits_dir):
    with pytest.raises(ShrinkError, match=r"\[4\] out of range; the teacher has layers 0..3"):
        distill(
            DistillConfig(student_layers=[0, 4]),
            clinc_slice,
            teacher_dir,
            logits_dir,
            tmp_path / "s",
            alpha=0.5,
            temperature=2.0,
            learning_rate=1e-3,
        )


def test_logits_of_other_texts_or_another_teacher_are_refused(
    tmp_path, clinc_slice, slice_config, teacher_dir, logits_dir
):
    other_data = tmp_path / "other-data"
    prepare(DataConfig(**{**slice_config.__dict__, "max_per_class": 30, "seed": 1}), other_data)
    cfg = DistillConfig(student_layers=[0, 2], train=TrainConfig(epochs=1, **FAST))
    with pytest.raises(ShrinkError, match="logits were computed on other texts"):
        distill(
            cfg,
            other_data,
            teacher_dir,
            logits_dir,
            tmp_path / "s",
            alpha=0.5,
            temperature=2.0,
            learning_rate=1e-3,
        )
    other_teacher = tmp_path / "other-teacher"
    train_teacher(
        TeacherConfig(checkpoint=str(teacher_dir), train=TrainConfig(max_length=16)),
        clinc_slice,
        other_teacher,
    )
    with pytest.raises(ShrinkError, match="not by the given teacher"):
        distill(
            cfg,
            clinc_slice,
            other_teacher,
            logits_dir,
            tmp_path / "s2",
            alpha=0.5,
            temperature=2.0,
            learning_rate=1e-3,
        )


def test_teacher_logits_refuse_a_teacher_with_other_labels(tmp_path, clinc_slice, minilm_dir):
    from shrink.models import save_classifier

    labels = load_prepared(clinc_slice)[1].label_names[:-1] + ["zzz"]
    hf = tiny_bert(labels, minilm_dir, tmp_path / "hf")
    save_classifier(load_classifier(hf), load_tokenizer(hf), tmp_path / "art", label_names=labels, technique="import")
    with pytest.raises(ShrinkError, match="label names disagree"):
        compute_teacher_logits(tmp_path / "art", clinc_slice, tmp_path / "logits")


def test_encode_truncates_to_max_length(tiny_model_dir):
    enc = encode(load_tokenizer(tiny_model_dir), ["word " * 100, "short"], [0, 1], max_length=16)
    assert enc.lengths.tolist()[0] == 16 and enc.lengths[1] < 16
    batch = enc.batch(np.array([1, 0]))
    assert batch["input_ids"].shape == (2, 16)
    assert batch["attention_mask"][0].sum() < 16 and batch["attention_mask"][1].sum() == 16


def test_frozen_word_embeddings_stay_the_teachers(tmp_path, clinc_slice, teacher_dir, logits_dir):
    cfg = DistillConfig(student_layers=[0, 2], train=TrainConfig(epochs=1, **FAST), freeze_word_embeddings=True)
    meta = distill(cfg, clinc_slice, teacher_dir, logits_dir, tmp_path / "s", 0.5, 2.0, 3e-3)
    assert meta.settings["freeze_word_embeddings"] is True
    teacher, _, _ = load_pytorch_artifact(teacher_dir)
    student, _, _ = load_pytorch_artifact(tmp_path / "s")
    torch.testing.assert_close(
        student.get_input_embeddings().weight, teacher.get_input_embeddings().weight, rtol=0, atol=0
    )
    # Everything else trained: the kept layers moved away from the teacher's.
    moved = student.bert.encoder.layer[0].attention.self.query.weight
    assert not torch.equal(moved, teacher.bert.encoder.layer[0].attention.self.query.weight)
