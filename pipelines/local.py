"""Run the compression pipeline on this machine with kfp.local.

kfp.local's SubprocessRunner executes the real DAG (same components, same
artifact passing, ParallelFor and Collected) as subprocesses of this Python,
so the code that runs here is the code that runs in the cluster's pods.
Caching is on, keyed on each task's inputs, so a second ``make demo`` reuses
the fine-tuned teacher and every unchanged step.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from shrink.config import PipelineConfig
from shrink.errors import ShrinkError
from shrink.logs import log

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
    runner: str = "subprocess",
) -> dict[str, Any]:
    """Execute the pipeline through kfp.local and collect its answer under ``results/<run-id>/``.

    ``runner="docker"`` runs every task in its component image (``pipelines/docker_runner.py``).
    """
    from kfp import local

    from pipelines.compression import build_pipeline

    run_id = run_id or new_run_id(cfg)
    state_dir = Path(state_dir).resolve()
    root = state_dir / "runs" / run_id
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
    start = time.monotonic()
    log.info("run %s: kfp.local, outputs under %s", run_id, root)
    task = build_pipeline(cfg)()
    elapsed = time.monotonic() - start
    return collect_results(task, run_id, Path(results_dir), root, elapsed)


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
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    latest = results_dir / "latest"
    if latest.is_symlink() or latest.is_file():
        latest.unlink()
    elif latest.is_dir():
        shutil.rmtree(latest)
    shutil.copytree(out, latest)
    summary["results_dir"] = str(out)
    return summary
