"""The distillation components: called directly (.python_func) and as a ParallelFor search under kfp.local."""

import json
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from kfp import dsl
from kfp.dsl import Dataset, Metrics, Model

from components.distill.component import distill as distill_op
from components.select_student.component import select_student as select_student_op
from components.teacher_logits.component import teacher_logits as teacher_logits_op
from components.train_teacher.component import train_teacher as train_teacher_op
from shrink.artifact import read_meta
from shrink.train import THREADS_ENV

FAST = {"batch_size": 16, "learning_rate": 3e-3, "early_stopping_patience": 0, "max_length": 32}
DISTILL = {"student_layers": [0, 2], "train": {**FAST, "epochs": 1}}
# A learning rate too small to move the student, and one that trains it: the search must pick the second.
TRIALS = [
    {"alpha": 0.5, "temperature": 2.0, "learning_rate": 1e-7},
    {"alpha": 0.5, "temperature": 2.0, "learning_rate": 3e-3},
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread here and in kfp.local's subprocesses (they inherit the environment)."""
    before = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(THREADS_ENV, "1")
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, clinc_slice, tiny_model_dir):
    root = tmp_path_factory.mktemp("components")
    model, metrics = Model(uri=str(root / "teacher")), Metrics(uri=str(root / "teacher-metrics"))
    train_teacher_op.python_func(
        dataset=Dataset(uri=str(clinc_slice)),
        teacher={"base_model": str(tiny_model_dir), "train": {**FAST, "epochs": 3}},
        model=model,
        metrics=metrics,
    )
    return model, metrics


@pytest.fixture(scope="module")
def logits(tmp_path_factory, clinc_slice, teacher):
    out = Dataset(uri=str(tmp_path_factory.mktemp("components") / "logits"))
    teacher_logits_op.python_func(dataset=Dataset(uri=str(clinc_slice)), teacher=teacher[0], distill={}, logits=out)
    return out


def test_train_teacher_component(teacher):
    model, metrics = teacher
    meta = read_meta(model.path)
    assert meta.technique == "fine-tune"
    assert model.metadata["content_hash"] == meta.content_hash()
    assert model.metadata["format"] == "pytorch" and model.metadata["precision"] == "fp32"
    assert metrics.metadata["val_accuracy"] == meta.metrics["val_accuracy"] > 2 / 11  # twice chance
    assert metrics.metadata["test_accuracy"] == meta.metrics["test_accuracy"]


def test_teacher_logits_component(logits, teacher):
    assert logits.metadata["teacher_content_hash"] == read_meta(teacher[0].path).content_hash()
    info = json.loads((Path(logits.path) / "teacher-logits.json").read_text())
    assert logits.metadata["train_examples"] == info["splits"]["train"]["count"] > 0


def _distill(tmp_path, name, clinc_slice, teacher, logits, trial):
    student, metrics = Model(uri=str(tmp_path / name)), Metrics(uri=str(tmp_path / f"{name}-metrics"))
    distill_op.python_func(
        dataset=Dataset(uri=str(clinc_slice)),
        teacher=teacher[0],
        logits=logits,
        distill=DISTILL,
        trial=trial,
        student=student,
        metrics=metrics,
    )
    return student, metrics


def test_distill_and_select_student_components(tmp_path, clinc_slice, teacher, logits):
    students = [_distill(tmp_path, f"s{i}", clinc_slice, teacher, logits, t) for i, t in enumerate(TRIALS)]
    for (student, metrics), trial in zip(students, TRIALS, strict=True):
        meta = read_meta(student.path)
        assert meta.parent["content_hash"] == read_meta(teacher[0].path).content_hash()
        assert {k: metrics.metadata[k] for k in trial} == trial
        assert metrics.metadata["val_accuracy"] == meta.metrics["val_accuracy"] == student.metadata["val_accuracy"]
    accs = [m.metadata["val_accuracy"] for _, m in students]
    assert accs[1] > accs[0], "the trained trial should beat the one whose learning rate is ~0"

    best, metrics = Model(uri=str(tmp_path / "best")), Metrics(uri=str(tmp_path / "best-metrics"))
    summary = select_student_op.python_func(students=[s for s, _ in students], best=best, metrics=metrics)
    winner = max(range(len(accs)), key=lambda i: (accs[i], -i))
    assert read_meta(best.path).content_hash() == read_meta(students[winner][0].path).content_hash()
    assert best.metadata["content_hash"] == students[winner][0].metadata["content_hash"]
    assert metrics.metadata["best_trial"] == winner
    assert [metrics.metadata[f"trial{i}_val_accuracy"] for i in range(2)] == accs
    assert metrics.metadata["trial1_learning_rate"] == TRIALS[1]["learning_rate"]
    assert f"trial {winner} of 2" in summary and "\n" not in summary


def test_select_student_with_a_tolerance_keeps_the_shallowest_student_within_it(tmp_path, clinc_slice, teacher, logits):
    """A shape search: a 1-layer student that barely trains and a trained 2-layer one. Accuracy alone keeps the
    deeper; a tolerance wide enough to admit the shallower keeps it; one narrower than the gap does not."""
    trials = [{**TRIALS[0], "depth": 1}, {**TRIALS[1], "depth": 2}]
    students = [_distill(tmp_path, f"d{i}", clinc_slice, teacher, logits, t)[0] for i, t in enumerate(trials)]
    accs = [s.metadata["val_accuracy"] for s in students]
    layers = [read_meta(s.path).metrics["num_layers"] for s in students]
    assert layers == [1, 2] and accs[1] > accs[0]
    gap = accs[1] - accs[0]
    for name, tolerance, expected in (("best", 0.0, 1), ("narrow", gap / 2, 1), ("wide", min(gap + 0.01, 0.99), 0)):
        best, metrics = Model(uri=str(tmp_path / name)), Metrics(uri=str(tmp_path / f"{name}-metrics"))
        summary = select_student_op.python_func(students=students, best=best, metrics=metrics, tolerance=tolerance)
        assert metrics.metadata["best_trial"] == expected, (name, tolerance, accs)
        assert read_meta(best.path).content_hash() == students[expected].metadata["content_hash"]
        assert ("shallowest within" in summary) == (tolerance > 0)
    with pytest.raises(SystemExit):
        select_student_op.python_func(
            students=students,
            best=Model(uri=str(tmp_path / "bad")),
            metrics=Metrics(uri=str(tmp_path / "bm")),
            tolerance=1.5,
        )


@pytest.mark.parametrize(
    ("trial", "message"),
    [
        ({"alpha": 2.0, "temperature": 2.0, "learning_rate": 1e-3}, "trial.alpha: 2.0 must be in [0, 1]"),
        ({"alpha": 0.5, "temperature": 2.0}, "missing: ['learning_rate']"),
    ],
)
def test_distill_component_bad_trial_exits_with_one_line(
    tmp_path, capsys, clinc_slice, teacher, logits, trial, message
):
    with pytest.raises(SystemExit) as exc:
        _distill(tmp_path, "bad", clinc_slice, teacher, logits, trial)
    assert exc.value.code == 3  # shrink.kfp_io.EXIT_EXPECTED: a ShrinkError
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and message in err[0]


@pytest.mark.filterwarnings("ignore:You may be attemping to run a task:RuntimeWarning")
def test_search_pipeline_under_kfp_local(tmp_path, clinc_slice, teacher, logits):
    """ParallelFor over two trials + Collected -> select_student, executed for real by kfp.local."""
    from kfp import local

    class Outputs(NamedTuple):
        summary: str
        metrics: Metrics
        best: Model

    @dsl.pipeline(name="distill-search-test")
    def search(trials: list, distill: dict) -> Outputs:
        dataset = dsl.importer(artifact_uri=str(clinc_slice), artifact_class=Dataset)
        teacher_model = dsl.importer(artifact_uri=teacher[0].path, artifact_class=Model)
        teacher_logits = dsl.importer(artifact_uri=logits.path, artifact_class=Dataset)
        with dsl.ParallelFor(items=trials, parallelism=1) as trial:
            task = distill_op(
                dataset=dataset.output,
                teacher=teacher_model.output,
                logits=teacher_logits.output,
                distill=distill,
                trial=trial,
            )
        pick = select_student_op(students=dsl.Collected(task.outputs["student"]))
        return Outputs(summary=pick.outputs["Output"], metrics=pick.outputs["metrics"], best=pick.outputs["best"])

    root = tmp_path / "pipeline-root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    run = search(trials=TRIALS, distill=DISTILL)

    # Every trial's student, read from the artifacts the run wrote (the chosen copy shares a trial's hash).
    trials = {}
    for meta_file in root.rglob("shrink.json"):
        meta = read_meta(meta_file.parent)
        trials.setdefault(meta.content_hash(), meta)
    assert len(trials) == 2
    best_trial = max(trials.values(), key=lambda m: m.metrics["val_accuracy"])
    assert best_trial.settings["learning_rate"] == TRIALS[1]["learning_rate"]

    best = read_meta(run.outputs["best"].path)
    assert best.content_hash() == best_trial.content_hash()
    metrics = run.outputs["metrics"].metadata
    assert metrics["best_val_accuracy"] == best_trial.metrics["val_accuracy"]
    assert sorted(metrics[f"trial{i}_val_accuracy"] for i in range(2)) == sorted(
        m.metrics["val_accuracy"] for m in trials.values()
    )
    assert "lr=0.003" in run.outputs["summary"]
