"""`shrink run` on a failing tiny config: one error line naming the user's input, at once, and a readable console."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from shrink.models import tiny_bert

ROOT = Path(__file__).resolve().parents[1]


def _shrink(*args, env=None, unset=(), timeout=120):
    environ = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(
        [sys.executable, "-m", "shrink.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def test_label_mismatch_is_one_error_line_naming_data_source(tmp_path, clinc_dir, minilm_dir):
    labels = ["balance", "book_flight", "oos"]
    teacher = tiny_bert(sorted([*labels, "weather"]), minilm_dir, tmp_path / "teacher")
    config = tmp_path / "c.yaml"
    config.write_text(
        f"name: t\nmodel_name: t\ndata: {{source: {clinc_dir}, labels: {labels}, max_per_class: 5}}\n"
        f"teacher: {{checkpoint: {teacher}, base_model: null}}\ndistill: {{student_layers: [0, 2]}}\n"
        "gate: {slos: [{metric: accuracy, direction: higher_is_better, kind: threshold, value: 0.5}]}\n"
    )
    start = time.monotonic()
    proc = _shrink("--state-dir", str(tmp_path / "state"), "run", "--config", str(config), "--run-id", "r1")
    took = time.monotonic() - start
    assert proc.returncode == 1, proc.stderr
    assert took < 30, f"a deterministic error took {took:.0f}s to report (retried?)"
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (
        f"error: teacher.checkpoint {teacher}: label names disagree with data.source {clinc_dir}: "
        "1 labels not in the dataset, e.g. ['weather']"
    )
    assert "\x1b[" not in proc.stdout + proc.stderr and "Traceback" not in proc.stdout + proc.stderr
    # One line per step as it starts and ends, the failing step's tail; no executor JSON, no kfp.local chatter.
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("run r1: logs in ")
    assert any(
        re.fullmatch(r"  Prepare data: done \([\d.]+s\), 15 train, 3 labels, data [0-9a-f]{12}", x) for x in lines
    )
    assert any(re.fullmatch(r"  Fingerprint data: done \([\d.]+s\), data [0-9a-f]{12}", x) for x in lines)
    assert any(x.startswith("  Teacher: fine-tune or import: FAILED after") and "exit code 3" in x for x in lines)
    assert "executor_input" not in proc.stdout and "parameterValues" not in proc.stdout
    assert len(lines) < 40, proc.stdout
    logs = tmp_path / "state" / "runs" / "r1" / "logs"
    assert "Executing task" in (logs / "kfp.log").read_text()
    teacher_log = next(logs.glob("*-train-teacher.log")).read_text()
    assert "executor_input" in teacher_log and "label names disagree" in teacher_log


def test_verbose_shows_the_step_logs_too(tmp_path, clinc_dir):
    config = tmp_path / "c.yaml"
    config.write_text(
        f"name: t\nmodel_name: t\ndata: {{source: {clinc_dir}, labels: [balance], max_per_class: 5}}\n"
        "gate: {slos: [{metric: accuracy, direction: higher_is_better, kind: threshold, value: 0.5}]}\n"
    )
    proc = _shrink("--state-dir", str(tmp_path / "state"), "run", "--config", str(config), "--verbose")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].endswith("a classifier needs at least two")
    assert "| " in proc.stdout and "Executing task" in proc.stdout  # step output and kfp.local's own, echoed


def test_data_command_uses_the_local_store(tmp_path, seaweed, monkeypatch, clinc_dir):
    """`shrink data` reads `.shrink/store.env` as `run` does: an s3:// source is found, not "no credentials"."""
    from shrink import storage

    storage.upload_dir(clinc_dir, "s3://shrink-test/cli-data/clinc150")
    state = tmp_path / "state"
    state.mkdir()
    (state / storage.ENV_FILE).write_text("".join(f"export {k}={v}\n" for k, v in seaweed.env().items()))
    config = tmp_path / "c.yaml"
    config.write_text(
        "name: t\nmodel_name: t\ndata: {source: s3://shrink-test/cli-data/clinc150, labels: [balance, oos]}\n"
        "gate: {slos: [{metric: accuracy, direction: higher_is_better, kind: threshold, value: 0.5}]}\n"
    )
    proc = _shrink("--state-dir", str(state), "data", "--config", str(config), unset=set(seaweed.env()))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("s3://shrink-test/cli-data/clinc150: ") and "2 labels" in proc.stdout


def test_key_figure_shows_only_the_counts_an_output_has():
    """A dataset's line names its labels; teacher logits count texts only, with no '? labels' placeholder."""
    from types import SimpleNamespace

    from pipelines.console import key_figure

    dataset = SimpleNamespace(metadata={"train_examples": 15250.0, "labels": 151.0})
    logits = SimpleNamespace(metadata={"train_examples": 15250.0})
    assert key_figure({"dataset": dataset}) == "15,250 train, 151 labels"
    assert key_figure({"logits": logits}) == "15,250 train"


def test_key_figure_tells_distillation_trials_apart():
    """In a search every trial is 'Distil student': its line names the shape and settings it trained with."""
    from types import SimpleNamespace

    from pipelines.console import key_figure

    student = SimpleNamespace(
        metadata={"val_accuracy": 0.921, "num_layers": 2.0, "alpha": 0.5, "temperature": 2.0, "learning_rate": 2e-4}
    )
    assert key_figure({"student": student}) == "val acc 92.10%, 2 layers, alpha 0.5, T 2, lr 0.0002"
    teacher = SimpleNamespace(metadata={"val_accuracy": 0.9474})
    assert key_figure({"teacher": teacher}) == "val acc 94.74%"


def test_an_engine_that_cannot_start_a_container_is_one_error_line(tmp_path):
    """A Docker engine that does not answer (here: no socket at all) fails the step with one line naming the image."""
    import io

    import pytest

    import docker
    from pipelines.console import DOCKER_API_TIMEOUT_S, RunConsole
    from shrink.errors import ShrinkError

    client = docker.DockerClient(base_url=f"unix://{tmp_path / 'absent.sock'}", version="1.41")
    console = RunConsole(tmp_path / "logs", out=io.StringIO())
    with pytest.raises(ShrinkError) as exc:
        console._run_docker_container(client, "ghcr.io/shrink-ml/shrink-gate:0.1.0", ["true"], {})
    message = str(exc.value)
    assert "\n" not in message and "could not start ghcr.io/shrink-ml/shrink-gate:0.1.0" in message
    # Creating a container under vfs copies the image first: the client waits longer than docker-py's 60 s.
    assert client.api.timeout >= DOCKER_API_TIMEOUT_S > 60
