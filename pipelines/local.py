"""Run the compression pipeline on this machine with kfp.local.

kfp.local's SubprocessRunner executes the real DAG (same components, same
artifact passing, ParallelFor and Collected) as subprocesses of this Python,
so the code that runs here is the code that runs in the cluster's pods.
Caching is on, keyed on each task's inputs, so a second ``make demo`` reuses
the fine-tuned teacher and every unchanged step.

The console shows one line per step (``pipelines/console.py``); kfp.local's own output
and every step's log stay under ``<run>/logs/``. A failed step is reported by its own
``error:`` line, the one ``shrink.kfp_io.component_main`` prints for a ``ShrinkError``.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from shrink.config import PipelineConfig
from shrink.errors import ShrinkError

STATE = Path(".shrink")


def new_run_id(cfg: PipelineConfig) -> str:
    """A readable, sortable run id: the pipeline name and the UTC start time."""
    return f"{cfg.name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"


def run_local(
    cfg: PipelineConfig,
    run_id: str | None = None,
    results_dir: str | Path = "results",
    state_dir: str | Path = STATE,
    caching: bool = True,
    verbose: bool = False,
    runner: str = "subprocess",
    out: TextIO | None = None,
) -> dict[str, Any]:
    """Execute the pipeline through kfp.local and collect its answer under ``results/<run-id>/``.

    ``runner="docker"`` runs every task in its component image (``pipelines/docker_runner.py``).

    Raises:
        ShrinkError: a step failed; the message is the step's own error line (naming the
            user's file, key or URI), after the step's last log lines on ``out``.
    """
    from kfp import local

    from pipelines.compression import build_pipeline
    from pipelines.console import RunConsole

    run_id = run_id or new_run_id(cfg)
    state_dir = Path(state_dir).resolve()
    root = state_dir / "runs" / run_id
    out = out or sys.stdout
    if runner == "docker":
        from pipelines.docker_runner import docker_runner

        task_runner = docker_runner(cfg, state_dir)
    elif runner == "subprocess":
        task_runner = local.SubprocessRunner(use_venv=False)
    else:
        raise ShrinkError(f"runner {runner!r}: use 'subprocess' or 'docker'")
    local.init(
        runner=task_runner,
        pipeline_root=str(root),
        raise_on_error=True,
        enable_caching=caching,
        cache_root=str(state_dir / "kfp-cache"),
    )
    pipeline = build_pipeline(cfg)
    console = RunConsole(root / "logs", out=out, verbose=verbose)
    console.say(f"run {run_id}: logs in {console.log_dir}/")
    start = time.monotonic()
    try:
        with console:
            task = pipeline()
    except RuntimeError as exc:  # kfp.local: a task failed (raise_on_error)
        raise step_failure(console, str(exc)) from None
    elapsed = time.monotonic() - start
    console.say(f"run {run_id}: done in {elapsed:.0f}s")
    return collect_results(task, run_id, Path(results_dir), root, elapsed)


def step_failure(console, kfp_message: str) -> ShrinkError:
    """The error a failed run reports: the failing step's own ``error:`` line, after its log's tail.

    A step that failed without one (a crash, a bug) is reported with its exit code and log.
    """
    from pipelines.console import strip_ansi

    step = console.failed()
    if step is None:
        return ShrinkError(f"run failed: {strip_ansi(kfp_message).splitlines()[0]} (see {console.kfp_log})")
    tail = step.tail()
    if tail:
        console.say(f"--- last lines of {step.name} (full log: {step.log}) ---")
        for line in tail:
            console.say(f"    {line}")
    line = step.error_line()
    if line:
        return ShrinkError(line)
    return ShrinkError(
        f"{step.name} failed with exit code {step.returncode} and no error line (a bug, not bad input); "
        f"its log: {step.log}"
    )


def collect_results(task, run_id: str, results_dir: Path, root: Path, elapsed: float) -> dict[str, Any]:
    """Copy the decision and report of a finished run into ``results/<run-id>/`` and ``results/latest/``."""
    out = results_dir / run_id
    out.mkdir(parents=True, exist_ok=True)
    decision_path = Path(task.outputs["decision"].path)
    report_path = Path(task.outputs["report"].path)
    shutil.copyfile(decision_path, out / "decision.json")
    shutil.copyfile(report_path, out / "report.html")
    decision = json.loads(decision_path.read_text())
    summary = {
        "run_id": run_id,
        "chosen": task.outputs["chosen"],
        "pipeline_root": str(root),
        "wall_time_s": round(elapsed, 1),
        "decision": decision,
    }
    from shrink import files

    files.write_json(out / "summary.json", summary)
    latest = results_dir / "latest"
    if latest.is_symlink() or latest.is_file():
        latest.unlink()
    elif latest.is_dir():
        shutil.rmtree(latest)
    shutil.copytree(out, latest)
    summary["results_dir"] = str(out)
    return summary
