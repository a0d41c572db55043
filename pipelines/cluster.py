"""Run the compression pipeline on a Kubeflow cluster: submit, schedule, list runs.

Every check that can fail without the cluster (placement, the package, the
parameters, the schedule) runs before the first request, and every lookup runs
before the first write, so a bad call creates nothing. Writes happen in one
order (experiment, pipeline or version, run) and if a later one fails, the
error says which earlier ones were created, so nothing is left unaccounted for.

Authentication uses the kfp SDK's usual means: ``token`` (``--token``), the
token file named by ``KF_PIPELINES_SA_TOKEN_PATH`` (a KFP pod or notebook),
otherwise kfp's own discovery (in-cluster service account, kube config).

The names below (service account, Secret, ConfigMap) are the ones ``k8s/``
creates; ``tests/test_k8s.py`` checks that the two agree.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from shrink.config import PipelineConfig
from shrink.errors import ShrinkError
from shrink.logs import log

PIPELINE_SERVICE_ACCOUNT = "shrink-pipeline"
S3_SECRET = "shrink-s3"
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
S3_CONFIG_MAP = "shrink-s3-config"
S3_CONFIG_KEYS = ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")
DEFAULT_EXPERIMENT = "shrink"
# Display names of the tasks whose outcome list_runs reports (pipelines/compression.py).
GATE_TASKS = ("SLO gate", "gate")
PROMOTE_TASKS = ("Promote to production", "promote")

_SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"


# --------------------------------------------------------------------------- checks without a cluster


def validate_placement(cfg: PipelineConfig) -> None:
    """Refuse a placement that would put the training steps on nodes without a GPU.

    Distillation always trains (and so do teacher fine-tuning and pruning when
    configured); on a pool without an accelerator they would either never be
    scheduled or crawl on CPU for hours. Caught here, before compiling or
    submitting, the error names the config key to fix.
    """
    gpu = cfg.placement.gpu
    steps = ["distillation"]
    if not cfg.teacher.checkpoint:
        steps.insert(0, "teacher fine-tuning")
    if cfg.prune.enabled:
        steps.append("pruning")
    what = ", ".join(steps)
    if not (gpu.accelerator_type or "").strip():
        raise ShrinkError(
            f"placement.gpu.accelerator_type is empty, but {what} run on that pool: name the node pool's GPU "
            "resource (e.g. nvidia.com/gpu) and set placement.gpu.accelerator_limit >= 1"
        )
    if gpu.accelerator_limit < 1:
        raise ShrinkError(
            f"placement.gpu.accelerator_limit is {gpu.accelerator_limit}, but {what} need a GPU: "
            f"set it to at least 1 ({gpu.accelerator_type} per pod)"
        )
    for name in ("cpu", "benchmark"):
        other = getattr(cfg.placement, name).node_selector
        if gpu.node_selector and gpu.node_selector == other:
            raise ShrinkError(
                f"placement.gpu.node_selector {gpu.node_selector} selects the same nodes as "
                f"placement.{name}: {what} would wait for a GPU that pool does not have; "
                "select the GPU node pool"
            )


@dataclass
class Package:
    """A compiled pipeline (KFP IR YAML) and what submit needs to know about it."""

    path: Path
    name: str
    digest: str
    inputs: dict[str, dict[str, Any]]
    source: str = ""

    def __post_init__(self) -> None:
        self.source = self.source or str(self.path)

    @property
    def default_version(self) -> str:
        """Package version + content hash: resubmitting the same package reuses its version."""
        import shrink

        return f"{shrink.__version__}-{self.digest[:12]}"


def load_package(path: str | Path, source: str | None = None) -> Package:
    """Read a compiled pipeline and check that it is one, so a wrong file fails before any upload."""
    path = Path(path)
    if not path.is_file():
        raise ShrinkError(f"{path}: pipeline package not found (compile one with `shrink compile`)")
    raw = path.read_bytes()
    try:
        docs = [d for d in yaml.safe_load_all(raw) if d is not None]
    except yaml.YAMLError as exc:
        message = f"{path}: not a compiled KFP pipeline (invalid YAML: {exc})"
        raise ShrinkError(message.replace("\n", " ")) from None
    spec = docs[0] if docs else None
    if not isinstance(spec, dict) or "root" not in spec or not isinstance(spec.get("pipelineInfo"), dict):
        raise ShrinkError(
            f"{path}: not a compiled KFP pipeline (no pipelineInfo/root); compile it with `shrink compile`"
        )
    name = spec["pipelineInfo"].get("name") or path.stem
    inputs = ((spec.get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {}
    digest = hashlib.sha256(raw).hexdigest()
    return Package(path=path, name=name, digest=digest, inputs=inputs, source=source or "")


def _package(pipeline: str | Path | Callable, workdir: Path) -> Package:
    if callable(pipeline) and not isinstance(pipeline, str | Path):
        from kfp import compiler

        out = workdir / "pipeline.yaml"
        compiler.Compiler().compile(pipeline, package_path=str(out))
        return load_package(out, source=f"pipeline function {getattr(pipeline, 'name', None) or pipeline}")
    return load_package(pipeline)


_PARAM_TYPES: dict[str, tuple[type, ...]] = {
    "STRING": (str,),
    "NUMBER_INTEGER": (int,),
    "NUMBER_DOUBLE": (int, float),
    "BOOLEAN": (bool,),
    "STRUCT": (dict,),
    "LIST": (list, tuple),
}


def check_params(package: Package, params: dict[str, Any] | None) -> dict[str, Any]:
    """Check run parameters against the pipeline's inputs (names, required ones, types)."""
    params = dict(params or {})
    known = package.inputs
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ShrinkError(
            f"{package.source}: pipeline {package.name!r} has no parameter {unknown[0]!r} "
            f"(parameters: {', '.join(sorted(known)) or 'none'})"
        )
    missing = sorted(
        k
        for k, spec in known.items()
        if k not in params and "defaultValue" not in spec and not spec.get("isOptional")
    )
    if missing:
        raise ShrinkError(
            f"{package.source}: pipeline {package.name!r} needs parameter {missing[0]!r} (it has no default)"
        )
    for key, value in params.items():
        kind = known[key].get("parameterType", "")
        allowed = _PARAM_TYPES.get(kind)
        wrong_bool = isinstance(value, bool) and kind in ("NUMBER_INTEGER", "NUMBER_DOUBLE")
        if allowed and (not isinstance(value, allowed) or wrong_bool):
            raise ShrinkError(
                f"parameter {key!r} of pipeline {package.name!r} must be {kind.lower().replace('_', ' ')}, "
                f"got {type(value).__name__} {value!r}"[:300]
            )
    return params


def kfp_cron(cron: str) -> str:
    """KFP schedules take six cron fields (seconds first); accept the usual five as well."""
    fields = cron.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6 or not all(re.fullmatch(r"[0-9A-Za-z*/,?LW#-]+", f) for f in fields):
        raise ShrinkError(
            f"cron {cron!r}: expected 5 fields (minute hour day month weekday, e.g. '0 3 * * 1') "
            "or KFP's 6 (seconds first)"
        )
    return " ".join(fields)


# --------------------------------------------------------------------------- connecting


def _token_file() -> str | None:
    path = os.environ.get("KF_PIPELINES_SA_TOKEN_PATH")
    if not path and os.path.isfile(_SA_TOKEN_PATH):
        path = _SA_TOKEN_PATH
    return path or None


def _read_token(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ShrinkError(
            f"{path}: cannot read the KFP token file (KF_PIPELINES_SA_TOKEN_PATH): {exc.strerror}"
        ) from None


def probe(host: str, token: str | None = None, timeout_s: float = 10.0) -> dict[str, Any]:
    """Ask the KFP API's health endpoint, quickly, and explain any failure in one line.

    kfp.Client itself retries its health check for half a minute and waits
    without a timeout on a silent host; this answers within ``timeout_s``.
    """
    import requests

    if not re.match(r"https?://", host):
        raise ShrinkError(
            f"KFP host {host!r} needs a scheme: http://localhost:8080 (after "
            "`kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80`) or https://<kubeflow>/pipeline"
        )
    url = host.rstrip("/") + "/apis/v2beta1/healthz"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        resp = requests.get(url, headers=headers, timeout=(timeout_s, timeout_s), allow_redirects=False)
    except requests.exceptions.SSLError as exc:
        raise ShrinkError(f"KFP at {host}: TLS failed ({_first_line(exc)}); check address and CA") from None
    except requests.exceptions.Timeout:
        raise ShrinkError(
            f"KFP at {host} did not answer within {timeout_s:g}s; check the address, VPN or port-forward"
        ) from None
    except requests.exceptions.ConnectionError as exc:
        raise ShrinkError(
            f"cannot reach KFP at {host} ({_reason(exc)}); check the address, or start a port-forward: "
            "kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80"
        ) from None
    if resp.status_code in (401, 403):
        raise ShrinkError(_auth_message(host, resp.status_code, token))
    if 300 <= resp.status_code < 400:
        where = resp.headers.get("Location", "a login page")
        raise ShrinkError(
            f"KFP at {host} redirected to {where} (HTTP {resp.status_code}): it wants a login; "
            "pass a token (--token) or set KF_PIPELINES_SA_TOKEN_PATH"
        )
    if resp.status_code == 404:
        raise ShrinkError(f"no KFP API at {url} (HTTP 404): is {host} the Kubeflow Pipelines address?")
    if resp.status_code >= 400:
        raise ShrinkError(f"KFP at {host} is not healthy: HTTP {resp.status_code} {resp.text[:200]}")
    try:
        return resp.json()
    except ValueError:
        raise ShrinkError(
            f"{url} did not answer with KFP's JSON: is {host} the Kubeflow Pipelines address?"
        ) from None


def _reason(exc: Exception) -> str:
    text = str(exc)
    markers = (
        "Connection refused", "Name or service not known", "No route to host", "Network is unreachable",
        "nodename nor servname", "Temporary failure in name resolution",
    )
    for marker in markers:
        if marker in text:
            return marker.lower()
    return _first_line(exc)[:200]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _auth_message(host: str | None, status: int, token: str | None) -> str:
    had = "the token was rejected: it is expired, revoked or lacks access" if token else "no token was sent"
    return (
        f"KFP at {host or '(kube config)'} refused the request (HTTP {status}): {had}; get a fresh "
        "token (e.g. `kubectl create token <service-account> -n <namespace> --audience "
        "pipelines.kubeflow.org`) and pass it with --token, or set KF_PIPELINES_SA_TOKEN_PATH"
    )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """kfp.Client prints links and a FutureWarning on every call; we log our own line instead."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _explain(exc: Exception, host: str | None, what: str, has_token: bool = True) -> ShrinkError:
    """One line for anything the KFP client raises."""
    import urllib3
    from kfp_server_api.exceptions import ApiException

    if isinstance(exc, ShrinkError):
        return exc
    if isinstance(exc, ApiException):
        if exc.status in (401, 403):
            return ShrinkError(f"{what}: " + _auth_message(host, exc.status, "token" if has_token else None))
        detail = exc.body or ""
        try:
            body = json.loads(detail)
            detail = body.get("message") or body.get("error") or detail
        except (TypeError, ValueError):
            pass
        if not exc.status:
            return ShrinkError(f"{what}: cannot reach KFP at {host}: {exc.reason}")
        return ShrinkError(
            f"{what}: KFP at {host} answered HTTP {exc.status} {exc.reason}: {str(detail)[:300]}"
        )
    if isinstance(exc, urllib3.exceptions.HTTPError | TimeoutError | ConnectionError):
        return ShrinkError(f"{what}: cannot reach KFP at {host}: {_reason(exc)}")
    if isinstance(exc, ValueError):  # kfp's own "multiple pipelines with the name ..." and the like
        return ShrinkError(f"{what}: {exc}")
    raise exc


class Session:
    """A connected kfp.Client plus the host for messages and links; every call maps errors to ShrinkError."""

    def __init__(self, client: Any, host: str | None, ui: str, has_token: bool = True):
        self.client = client
        self.host = host
        self.ui = ui.rstrip("/")
        self.has_token = has_token

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` without kfp's prints; failures become one ShrinkError naming ``what``."""
        try:
            with _quiet():
                return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - _explain re-raises what it does not recognise
            raise _explain(exc, self.host, what, self.has_token) from None

    def link(self, kind: str, ident: str) -> str:
        """The KFP UI page of a run (``runs``) or recurring run (``recurringrun``)."""
        return f"{self.ui}/#/{kind}/details/{ident}"


def connect(
    host: str | None = None,
    token: str | None = None,
    namespace: str | None = None,
    timeout_s: float = 10.0,
    ui_host: str | None = None,
) -> Session:
    """Connect to the KFP API, failing within ``timeout_s`` with a clear message when it cannot."""
    import kfp

    host = host or os.environ.get("KF_PIPELINES_ENDPOINT") or None
    credentials = None
    token_path = None if token else _token_file()
    if token_path:
        from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

        credentials = ServiceAccountTokenVolumeCredentials(token_path)
    if host:
        probe(host, token or (_read_token(token_path) if token_path else None), timeout_s)
    elif not (os.environ.get("KUBERNETES_SERVICE_HOST") or _kube_config_exists()):
        raise ShrinkError(
            "no KFP host: pass --host (e.g. http://localhost:8080 with a port-forward) or set "
            "KF_PIPELINES_ENDPOINT; without one, kfp needs to run in the cluster or a kube config"
        )
    try:
        with _quiet():
            client = kfp.Client(
                host=host,
                existing_token=token,
                credentials=credentials,
                namespace=namespace or "kubeflow",
                ui_host=ui_host,
            )
    except Exception as exc:  # noqa: BLE001
        raise _explain(exc, host, "connect", bool(token or token_path)) from None
    ui = os.environ.get("KF_PIPELINES_UI_ENDPOINT") or ui_host or host or "/pipeline"
    return Session(client, host, ui, has_token=bool(token or token_path))


def _kube_config_exists() -> bool:
    paths = os.environ.get("KUBECONFIG", "").split(os.pathsep) + [os.path.expanduser("~/.kube/config")]
    return any(p and os.path.isfile(p) for p in paths)


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
        with _quiet():
            exp_id = s.client.get_experiment(experiment_name=experiment, namespace=namespace).experiment_id
    except ValueError as exc:
        if "Multiple" in str(exc):
            raise ShrinkError(f"experiment {experiment!r}: several experiments have this name") from None
    except Exception as exc:  # noqa: BLE001
        raise _explain(exc, s.host, f"look up experiment {experiment!r}", s.has_token) from None
    pipeline_id = s.call(f"look up pipeline {pipeline_name!r}", s.client.get_pipeline_id, pipeline_name)
    version_id = None
    if pipeline_id:
        found = s.call(
            f"look up version {version_name!r} of pipeline {pipeline_name!r}",
            s.client.list_pipeline_versions, pipeline_id, page_size=10, filter=_name_filter(version_name),
        ).pipeline_versions or []
        found = [v for v in found if v.display_name == version_name]
        if found:
            if f"sha256:{pkg.digest}" not in (found[0].description or ""):
                raise ShrinkError(
                    f"pipeline {pipeline_name!r} already has a version {version_name!r} with different "
                    f"content; choose another version name, or leave it out to use {pkg.default_version!r}"
                )
            version_id = found[0].pipeline_version_id
    return _Plan(experiment, exp_id, pipeline_name, pipeline_id, version_name, version_id)


def _create_prerequisites(
    s: Session, pkg: Package, plan: _Plan, namespace: str | None, created: list[str]
) -> None:
    """Create the experiment, pipeline and version that the plan lacks, recording each in ``created``."""
    description = f"shrink compression pipeline sha256:{pkg.digest}"
    if plan.experiment_id is None:
        exp = _step(s, created, f"create experiment {plan.experiment!r}", s.client.create_experiment,
                    plan.experiment, description="shrink compression runs", namespace=namespace)
        plan.experiment_id = exp.experiment_id
        created.append(f"experiment {plan.experiment!r} ({plan.experiment_id})")
    if plan.pipeline_id is None:
        # An empty pipeline, then the named version below: kfp.Client.upload_pipeline would name the
        # first version after the pipeline, and version names are how a run says which code it ran.
        # kfp.Client has no call for this; its own generated API object does.
        import kfp_server_api

        body = kfp_server_api.V2beta1Pipeline(
            display_name=plan.pipeline_name, name=plan.pipeline_name,
            description="shrink compression pipeline", namespace=namespace or None,
        )
        pipe = _step(s, created, f"create pipeline {plan.pipeline_name!r}",
                     s.client._pipelines_api.pipeline_service_create_pipeline, body)
        plan.pipeline_id = pipe.pipeline_id
        created.append(f"pipeline {plan.pipeline_name!r} ({plan.pipeline_id})")
    if plan.version_id is None:
        ver = _step(s, created, f"upload version {plan.version_name!r} of {plan.pipeline_name!r}",
                    s.client.upload_pipeline_version, str(pkg.path), plan.version_name,
                    pipeline_id=plan.pipeline_id, description=description)
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
        from pipelines.compression import build_pipeline

        pipeline = build_pipeline(pipeline)
    pkg = _package(pipeline, workdir)
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
            s, created, f"create run {run_name!r}", s.client.run_pipeline,
            plan.experiment_id, run_name, params=args, pipeline_id=plan.pipeline_id,
            version_id=plan.version_id, enable_caching=enable_caching, service_account=service_account,
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
            existing = s.call(
                f"look up recurring run {job_name!r}", s.client.list_recurring_runs,
                experiment_id=plan.experiment_id, page_size=10, filter=_name_filter(job_name),
            ).recurring_runs or []
            existing = [r for r in existing if r.display_name == job_name]
            if existing:
                raise ShrinkError(
                    f"experiment {experiment!r} already has a recurring run {job_name!r} "
                    f"({existing[0].recurring_run_id}); disable or delete it first, or pass another job name"
                )
        created: list[str] = []
        _create_prerequisites(s, pkg, plan, namespace, created)
        job = _step(
            s, created, f"create recurring run {job_name!r}", s.client.create_recurring_run,
            plan.experiment_id, job_name, description=f"{pipeline_name} {plan.version_name}, cron {cron6}",
            cron_expression=cron6, max_concurrency=max_concurrency, no_catchup=no_catchup, params=args,
            pipeline_id=plan.pipeline_id, version_id=plan.version_id, enable_caching=enable_caching,
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
            with _quiet():
                found = s.client.get_experiment(experiment_name=experiment, namespace=namespace)
            experiment_id = found.experiment_id
        except ValueError:
            where = s.host or "KFP"
            raise ShrinkError(f"no experiment {experiment!r} at {where} (submit files runs there)") from None
        except Exception as exc:  # noqa: BLE001
            raise _explain(exc, s.host, f"look up experiment {experiment!r}", s.has_token) from None
    resp = s.call("list runs", s.client.list_runs, page_size=limit, sort_by="created_at desc",
                  experiment_id=experiment_id, namespace=namespace)
    rows = []
    for run in (resp.runs or [])[:limit]:
        if run.run_details is None or not run.run_details.task_details:
            run = s.call(f"get run {run.run_id}", s.client.get_run, run.run_id)
        tasks = (run.run_details.task_details if run.run_details else None) or []
        rows.append({
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
        })
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


# --------------------------------------------------------------------------- platform settings for tasks


def use_object_store(task: Any) -> Any:
    """Give a task the object store's endpoint and keys as the AWS SDK's environment variables.

    The values come from the ConfigMap and Secret that ``k8s/`` creates, so no credential
    is ever written into the compiled pipeline. kfp.local ignores this (it uses the local env).
    """
    from kfp import kubernetes as k8s

    k8s.use_secret_as_env(task, secret_name=S3_SECRET, secret_key_to_env={k: k for k in S3_SECRET_KEYS})
    k8s.use_config_map_as_env(
        task, config_map_name=S3_CONFIG_MAP, config_map_key_to_env={k: k for k in S3_CONFIG_KEYS}
    )
    return task
