"""Run the compression pipeline on a Kubeflow cluster: submit, schedule, list runs.

Every check that can fail without the cluster (``pipelines/cluster_checks.py``) runs
before the first request, and every lookup runs before the first write, so a bad
call creates nothing. Writes happen in one order (experiment, pipeline or
version, run) and if a later one fails, the error says which earlier ones were
created, so nothing is left unaccounted for. Connecting and the error messages
are ``pipelines/connection.py``'s.

The service account is the one ``k8s/`` creates; ``tests/test_k8s.py`` checks
that the two agree.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pipelines.cluster_checks import Package, check_params, kfp_cron, package_of, validate_placement
from pipelines.compression import build_pipeline
from pipelines.connection import Session, connect, explain, quiet
from pipelines.steps import STEPS
from shrink.config import PipelineConfig
from shrink.errors import ShrinkError
from shrink.logs import log

PIPELINE_SERVICE_ACCOUNT = "shrink-pipeline"
DEFAULT_EXPERIMENT = "shrink"
# Names of the tasks whose outcome list_runs reports: the catalog's display name, or the
# component's name where a task has none.
GATE_TASKS = (STEPS["gate"].display, STEPS["gate"].name)
PROMOTE_TASKS = (STEPS["promote"].display, STEPS["promote"].name)


# --------------------------------------------------------------------------- lookups, then writes


def _name_filter(name: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})


@dataclass
class _Plan:
    """What exists already and what a submission will create, decided before any write."""

    experiment: str
    experiment_id: str | None
    pipeline_name: str
    pipeline_id: str | None
    version_name: str
    version_id: str | None


def _plan(
    s: Session, pkg: Package, experiment: str, pipeline_name: str, version_name: str, namespace: str | None
) -> _Plan:
    exp_id = None
    try:
        with quiet():
            exp_id = s.client.get_experiment(experiment_name=experiment, namespace=namespace).experiment_id
    except ValueError as exc:
        if "Multiple" in str(exc):
            raise ShrinkError(f"experiment {experiment!r}: several experiments have this name") from None
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, s.host, f"look up experiment {experiment!r}", s.has_token) from None
    pipeline_id = s.call(f"look up pipeline {pipeline_name!r}", s.client.get_pipeline_id, pipeline_name)
    version_id = None
    if pipeline_id:
        found = (
            s.call(
                f"look up version {version_name!r} of pipeline {pipeline_name!r}",
                s.client.list_pipeline_versions,
                pipeline_id,
                page_size=10,
                filter=_name_filter(version_name),
            ).pipeline_versions
            or []
        )
        found = [v for v in found if v.display_name == version_name]
        if found:
            if f"sha256:{pkg.digest}" not in (found[0].description or ""):
                raise ShrinkError(
                    f"pipeline {pipeline_name!r} already has a version {version_name!r} with different "
                    f"content; choose another version name, or leave it out to use {pkg.default_version!r}"
                )
            version_id = found[0].pipeline_version_id
    return _Plan(experiment, exp_id, pipeline_name, pipeline_id, version_name, version_id)


def _create_prerequisites(s: Session, pkg: Package, plan: _Plan, namespace: str | None, created: list[str]) -> None:
    """Create the experiment, pipeline and version that the plan lacks, recording each in ``created``."""
    description = f"shrink compression pipeline sha256:{pkg.digest}"
    if plan.experiment_id is None:
        exp = _step(
            s,
            created,
            f"create experiment {plan.experiment!r}",
            s.client.create_experiment,
            plan.experiment,
            description="shrink compression runs",
            namespace=namespace,
        )
        plan.experiment_id = exp.experiment_id
        created.append(f"experiment {plan.experiment!r} ({plan.experiment_id})")
    if plan.pipeline_id is None:
        # An empty pipeline, then the named version below: kfp.Client.upload_pipeline would name the
        # first version after the pipeline, and version names are how a run says which code it ran.
        # kfp.Client has no call for this; its own generated API object does.
        import kfp_server_api

        body = kfp_server_api.V2beta1Pipeline(
            display_name=plan.pipeline_name,
            name=plan.pipeline_name,
            description="shrink compression pipeline",
            namespace=namespace or None,
        )
        pipe = _step(
            s,
            created,
            f"create pipeline {plan.pipeline_name!r}",
            s.client._pipelines_api.pipeline_service_create_pipeline,
            body,
        )
        plan.pipeline_id = pipe.pipeline_id
        created.append(f"pipeline {plan.pipeline_name!r} ({plan.pipeline_id})")
    if plan.version_id is None:
        ver = _step(
            s,
            created,
            f"upload version {plan.version_name!r} of {plan.pipeline_name!r}",
            s.client.upload_pipeline_version,
            str(pkg.path),
            plan.version_name,
            pipeline_id=plan.pipeline_id,
            description=description,
        )
        plan.version_id = ver.pipeline_version_id
        created.append(f"version {plan.version_name!r} ({plan.version_id}) of {plan.pipeline_name!r}")


def _step(s: Session, created: list[str], what: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """One write; on failure, the error lists what earlier writes of this call created."""
    try:
        return s.call(what, fn, *args, **kw)
    except ShrinkError as exc:
        if created:
            raise ShrinkError(
                f"{exc}. Already created (kept, and reused by the next submit with the same names): "
                + ", ".join(created)
            ) from None
        raise


Pipeline = str | Path | Callable | PipelineConfig


def _prepare(
    pipeline: Pipeline, params: dict[str, Any] | None, cfg: PipelineConfig | None, workdir: Path
) -> tuple[Package, dict[str, Any]]:
    if isinstance(pipeline, PipelineConfig):
        cfg = pipeline
    if cfg is not None:
        validate_placement(cfg)
    if isinstance(pipeline, PipelineConfig):
        pipeline = build_pipeline(pipeline)
    pkg = package_of(pipeline, workdir)
    return pkg, check_params(pkg, params)


def submit(
    pipeline: Pipeline,
    host: str | None = None,
    params: dict[str, Any] | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    pipeline_name: str | None = None,
    version_name: str | None = None,
    *,
    run_name: str | None = None,
    cfg: PipelineConfig | None = None,
    token: str | None = None,
    namespace: str | None = None,
    service_account: str | None = PIPELINE_SERVICE_ACCOUNT,
    enable_caching: bool | None = None,
    timeout_s: float = 10.0,
) -> str:
    """Start one run of a pipeline on a KFP cluster and return the run's URL.

    Args:
        pipeline: A compiled package (YAML path), a pipeline function, or a PipelineConfig (placement
            checked, then compiled with pipelines.compression.build_pipeline).
        host: KFP API address (``http://localhost:8080``, ``https://<kubeflow>/pipeline``); None uses
            ``KF_PIPELINES_ENDPOINT``, then kfp's in-cluster / kube config discovery.
        params: Run parameters; checked against the pipeline's inputs before anything is created.
        experiment: Experiment to file the run under (created when missing).
        pipeline_name: Name of the pipeline in KFP (default: the package's own name). Reused when it exists.
        version_name: Version to run (default: ``<package version>-<content hash>``); an existing version of
            that name is reused only when its content is identical.
        run_name: Display name of the run (default: pipeline, version and UTC time).
        cfg: The pipeline config, to check placement before submitting.
        token: Bearer token for the KFP API (otherwise ``KF_PIPELINES_SA_TOKEN_PATH`` or kube config).
        namespace: KFP namespace (multi-user installs: the profile namespace).
        service_account: Kubernetes service account the pipeline pods run as (``k8s/`` creates it).
        enable_caching: Override every task's caching setting (None keeps the compiled settings).
        timeout_s: How long to wait for the host before giving up.
    """
    with tempfile.TemporaryDirectory(prefix="shrink-submit-") as tmp:
        pkg, args = _prepare(pipeline, params, cfg, Path(tmp))
        pipeline_name = pipeline_name or pkg.name
        version_name = version_name or pkg.default_version
        s = connect(host, token, namespace, timeout_s)
        plan = _plan(s, pkg, experiment, pipeline_name, version_name, namespace)
        created: list[str] = []
        _create_prerequisites(s, pkg, plan, namespace, created)
        now = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
        run_name = run_name or f"{pipeline_name} {plan.version_name} {now}"
        run = _step(
            s,
            created,
            f"create run {run_name!r}",
            s.client.run_pipeline,
            plan.experiment_id,
            run_name,
            params=args,
            pipeline_id=plan.pipeline_id,
            version_id=plan.version_id,
            enable_caching=enable_caching,
            service_account=service_account,
        )
    url = s.link("runs", run.run_id)
    log.info("run %s of %s (version %s) started: %s", run.run_id, pipeline_name, plan.version_name, url)
    return url


def schedule(
    pipeline: Pipeline,
    host: str | None = None,
    params: dict[str, Any] | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    pipeline_name: str | None = None,
    version_name: str | None = None,
    *,
    cron: str,
    max_concurrency: int = 1,
    no_catchup: bool = True,
    job_name: str | None = None,
    cfg: PipelineConfig | None = None,
    token: str | None = None,
    namespace: str | None = None,
    service_account: str | None = PIPELINE_SERVICE_ACCOUNT,
    enable_caching: bool | None = None,
    timeout_s: float = 10.0,
) -> str:
    """Create a recurring run (scheduled retraining) and return its URL.

    Arguments as for :func:`submit`, plus ``cron`` (5 fields, or KFP's 6 with seconds first),
    ``max_concurrency`` (runs of this schedule at once, 1-10) and ``no_catchup`` (after a pause,
    start one run rather than one per missed slot). A schedule whose name is taken in the
    experiment is refused rather than doubled.
    """
    cron6 = kfp_cron(cron)
    if not 1 <= max_concurrency <= 10:
        raise ShrinkError(f"max_concurrency {max_concurrency}: KFP allows 1 to 10 runs at once per schedule")
    with tempfile.TemporaryDirectory(prefix="shrink-schedule-") as tmp:
        pkg, args = _prepare(pipeline, params, cfg, Path(tmp))
        pipeline_name = pipeline_name or pkg.name
        version_name = version_name or pkg.default_version
        job_name = job_name or f"{pipeline_name} (scheduled)"
        s = connect(host, token, namespace, timeout_s)
        plan = _plan(s, pkg, experiment, pipeline_name, version_name, namespace)
        if plan.experiment_id:
            existing = (
                s.call(
                    f"look up recurring run {job_name!r}",
                    s.client.list_recurring_runs,
                    experiment_id=plan.experiment_id,
                    page_size=10,
                    filter=_name_filter(job_name),
                ).recurring_runs
                or []
            )
            existing = [r for r in existing if r.display_name == job_name]
            if existing:
                raise ShrinkError(
                    f"experiment {experiment!r} already has a recurring run {job_name!r} "
                    f"({existing[0].recurring_run_id}); disable or delete it first, or pass another job name"
                )
        created: list[str] = []
        _create_prerequisites(s, pkg, plan, namespace, created)
        job = _step(
            s,
            created,
            f"create recurring run {job_name!r}",
            s.client.create_recurring_run,
            plan.experiment_id,
            job_name,
            description=f"{pipeline_name} {plan.version_name}, cron {cron6}",
            cron_expression=cron6,
            max_concurrency=max_concurrency,
            no_catchup=no_catchup,
            params=args,
            pipeline_id=plan.pipeline_id,
            version_id=plan.version_id,
            enable_caching=enable_caching,
            service_account=service_account,
        )
    url = s.link("recurringrun", job.recurring_run_id)
    log.info("recurring run %s (%s) of %s created: %s", job.recurring_run_id, cron6, pipeline_name, url)
    return url


# --------------------------------------------------------------------------- reading runs


def list_runs(
    host: str | None = None,
    experiment: str | None = DEFAULT_EXPERIMENT,
    limit: int = 10,
    *,
    token: str | None = None,
    namespace: str | None = None,
    timeout_s: float = 10.0,
) -> list[dict[str, Any]]:
    """The most recent runs, newest first, with their state and the gate's and promotion's outcome.

    KFP's API exposes task states but not output values, so ``gate`` and ``promote`` are the
    states of those tasks (e.g. ``SUCCEEDED``, ``FAILED``, ``SKIPPED``; None before they ran);
    the decision itself is the gate's ``decision`` artifact, linked from the run page.
    """
    if limit < 1:
        raise ShrinkError(f"limit {limit}: must be >= 1")
    s = connect(host, token, namespace, timeout_s)
    experiment_id = None
    if experiment:
        try:
            with quiet():
                found = s.client.get_experiment(experiment_name=experiment, namespace=namespace)
            experiment_id = found.experiment_id
        except ValueError:
            where = s.host or "KFP"
            raise ShrinkError(f"no experiment {experiment!r} at {where} (submit files runs there)") from None
        except Exception as exc:  # noqa: BLE001
            raise explain(exc, s.host, f"look up experiment {experiment!r}", s.has_token) from None
    resp = s.call(
        "list runs",
        s.client.list_runs,
        page_size=limit,
        sort_by="created_at desc",
        experiment_id=experiment_id,
        namespace=namespace,
    )
    rows = []
    for run in (resp.runs or [])[:limit]:
        if run.run_details is None or not run.run_details.task_details:
            run = s.call(f"get run {run.run_id}", s.client.get_run, run.run_id)
        tasks = (run.run_details.task_details if run.run_details else None) or []
        rows.append(
            {
                "run_id": run.run_id,
                "name": run.display_name,
                "state": str(run.state) if run.state else None,
                "created_at": _iso(run.created_at),
                "finished_at": _iso(run.finished_at),
                "pipeline_version_id": getattr(run.pipeline_version_reference, "pipeline_version_id", None),
                "recurring_run_id": run.recurring_run_id,
                "gate": _task_state(tasks, GATE_TASKS),
                "promote": _task_state(tasks, PROMOTE_TASKS),
                "error": getattr(run.error, "message", None),
                "url": s.link("runs", run.run_id),
            }
        )
    return rows


def _iso(value: datetime | str | None) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _task_state(tasks: list[Any], names: tuple[str, ...]) -> str | None:
    for task in tasks:
        if task.display_name in names:
            return str(task.state) if task.state else None
    return None
