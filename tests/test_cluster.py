"""Cluster submission: placement checks, image names, and submit/schedule/list_runs against KFP's API.

The KFP API is played by a small HTTP server on 127.0.0.1 that speaks the v2beta1
REST endpoints the kfp SDK calls (there is no KFP backend in CI); the real kfp
client talks to it, so request building, error mapping and the "nothing half
created" order are exercised end to end.
"""

import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from kfp import compiler, dsl

import shrink
from pipelines import cluster_checks as preflight
from pipelines import connection, object_store
from pipelines.images import EXTRA_IMAGES, GPU_STEPS, IMAGES, build_plan, image_for, target_for
from pipelines.submit import PIPELINE_SERVICE_ACCOUNT, list_runs, schedule, submit
from shrink.config import ImagesConfig, PipelineConfig, from_dict
from shrink.errors import ShrinkError

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- a throwaway pipeline


@dsl.component(base_image="python:3.11-slim")
def _echo(text: str, times: int) -> str:
    return text * times


@dsl.pipeline(name="shrink-tiny")
def _tiny(text: str = "hi", times: int = 2, settings: dict = {"a": 1}):  # noqa: B006 - KFP default
    _echo(text=text, times=times)


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pkg") / "tiny.yaml"
    compiler.Compiler().compile(_tiny, package_path=str(path))
    return path


def _config(**placement) -> PipelineConfig:
    return from_dict(PipelineConfig, {"name": "p", "model_name": "m", "data": {"source": "x"}, **placement})


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- placement


def test_default_placement_is_valid():
    preflight.validate_placement(_config())


@pytest.mark.parametrize(
    ("gpu", "key"),
    [
        ({"accelerator_type": None, "accelerator_limit": 1}, "placement.gpu.accelerator_type"),
        ({"accelerator_type": "  ", "accelerator_limit": 1}, "placement.gpu.accelerator_type"),
        ({"accelerator_type": "nvidia.com/gpu", "accelerator_limit": 0}, "placement.gpu.accelerator_limit"),
        ({"node_selector": {"shrink.dev/pool": "cpu-serving"}}, "placement.gpu.node_selector"),
    ],
)
def test_placement_without_gpu_for_training_is_refused(gpu, key):
    cfg = _config(placement={"gpu": {"accelerator_type": "nvidia.com/gpu", "accelerator_limit": 1, **gpu}})
    with pytest.raises(ShrinkError, match=key) as err:
        preflight.validate_placement(cfg)
    assert "distillation" in str(err.value)


def test_placement_message_names_the_training_steps_configured():
    no_gpu = {"gpu": {"accelerator_type": None}}
    with pytest.raises(ShrinkError) as err:
        preflight.validate_placement(_config(placement=no_gpu, teacher={"checkpoint": "s3://b/t"}))
    assert "teacher fine-tuning" not in str(err.value)
    with pytest.raises(ShrinkError) as err:
        preflight.validate_placement(_config(placement=no_gpu, prune={"enabled": True}))
    assert "teacher fine-tuning" in str(err.value) and "pruning" in str(err.value)


# --------------------------------------------------------------------------- images


def test_image_tag_defaults_to_the_package_version_never_latest():
    assert shrink.__version__ != "0.0.0", "the project must be installed (make venv) for its version"
    ref = image_for("distill", ImagesConfig())
    assert ref == f"ghcr.io/shrink-ml/shrink-distill:{shrink.__version__}"
    assert not ref.endswith(":latest")
    assert image_for("gate", ImagesConfig(registry="registry.example.com:5000/ml/", tag="1.2.3")) == (
        "registry.example.com:5000/ml/shrink-gate:1.2.3"
    )
    assert image_for("gate", ImagesConfig(registry="", tag="1.2.3")) == "shrink-gate:1.2.3"


def test_latest_and_malformed_tags_are_refused():
    with pytest.raises(ShrinkError, match="latest"):
        from_dict(ImagesConfig, {"tag": "latest"}, "images")
    with pytest.raises(ShrinkError, match="latest"):
        image_for("gate", ImagesConfig(tag="latest"))  # built without the config check
    with pytest.raises(ShrinkError, match="not a valid image tag"):
        image_for("gate", ImagesConfig(tag="1.0+local"))
    with pytest.raises(ShrinkError, match="not a valid registry"):
        image_for("gate", ImagesConfig(registry="Registry.Example.com/ML"))
    with pytest.raises(ShrinkError, match="no image for step 'nope'"):
        image_for("nope", ImagesConfig())


def test_every_step_has_one_distinct_image_and_target():
    assert len(set(IMAGES.values())) == len(IMAGES)
    assert GPU_STEPS <= set(IMAGES)
    assert {"train_teacher", "teacher_logits", "distill", "prune"} <= GPU_STEPS
    assert not {"prepare_data", "quantize_torch", "export_onnx", "benchmark", "gate", "promote"} & GPU_STEPS
    plan = build_plan(ImagesConfig(tag="9.9.9"))
    assert sorted(row[0] for row in plan) == sorted([*IMAGES, *EXTRA_IMAGES])
    assert all(row[1] == target_for(row[0]) and row[3].endswith(":9.9.9") for row in plan)
    assert {row[0] for row in plan if row[2] == "gpu"} == GPU_STEPS


def test_images_cli_refuses_latest():
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.images", "--tag", "latest"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "latest" in proc.stderr and not proc.stdout


# --------------------------------------------------------------------------- checks before any request


def test_submit_to_a_closed_port_fails_fast_and_clearly(package):
    port = _closed_port()
    start = time.monotonic()
    expected = rf"cannot reach KFP at http://127.0.0.1:{port} \(connection refused"
    with pytest.raises(ShrinkError, match=expected):
        submit(package, host=f"http://127.0.0.1:{port}", params={"times": 3})
    assert time.monotonic() - start < 5


def test_submit_a_pipeline_function_to_a_closed_port(tmp_path):
    port = _closed_port()
    with pytest.raises(ShrinkError, match="cannot reach KFP"):
        submit(_tiny, host=f"http://127.0.0.1:{port}")


def test_silent_host_times_out():
    with socket.socket() as server:  # accepts connections (backlog) but never answers
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        host = f"http://127.0.0.1:{server.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(ShrinkError, match="did not answer within 0.5s"):
            connection.connect(host, timeout_s=0.5)
        assert time.monotonic() - start < 5


def test_bad_input_is_refused_before_connecting(package, tmp_path):
    host = f"http://127.0.0.1:{_closed_port()}"  # reaching it would give "cannot reach"
    with pytest.raises(ShrinkError, match="has no parameter 'tims'.*parameters: settings, text, times"):
        submit(package, host=host, params={"tims": 3})
    with pytest.raises(ShrinkError, match="'times' .* must be number integer, got str"):
        submit(package, host=host, params={"times": "3"})
    with pytest.raises(ShrinkError, match="must be number integer, got bool"):
        submit(package, host=host, params={"times": True})
    no_gpu = _config(placement={"gpu": {"accelerator_limit": 0}})
    with pytest.raises(ShrinkError, match="placement.gpu.accelerator_limit"):
        submit(package, host=host, cfg=no_gpu)
    with pytest.raises(ShrinkError, match="placement.gpu.accelerator_limit"):
        submit(no_gpu, host=host)  # a config is checked before it is compiled
    with pytest.raises(ShrinkError, match="pipeline package not found"):
        submit(tmp_path / "missing.yaml", host=host)
    not_a_pipeline = tmp_path / "values.yaml"
    not_a_pipeline.write_text("a: 1\n")
    with pytest.raises(ShrinkError, match="not a compiled KFP pipeline"):
        submit(not_a_pipeline, host=host)
    with pytest.raises(ShrinkError, match="needs a scheme"):
        submit(package, host="localhost:8080")
    with pytest.raises(ShrinkError, match="cron"):
        schedule(package, host=host, cron="every day")
    with pytest.raises(ShrinkError, match="max_concurrency"):
        schedule(package, host=host, cron="0 3 * * *", max_concurrency=0)


def test_cron_takes_five_or_six_fields():
    assert preflight.kfp_cron("0 3 * * 1") == "0 0 3 * * 1"
    assert preflight.kfp_cron("30 0 3 * * *") == "30 0 3 * * *"
    with pytest.raises(ShrinkError):
        preflight.kfp_cron("0 3 * *")


# --------------------------------------------------------------------------- a local stand-in for the KFP API


class FakeKFP(ThreadingHTTPServer):
    """The v2beta1 endpoints kfp.Client uses, with in-memory state and switchable failures."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.token: str | None = None  # when set, every request needs "Bearer <token>"
        self.open_healthz = False  # some gateways let the health check through unauthenticated
        self.fail: dict[str, int] = {}  # "POST /apis/v2beta1/runs" -> HTTP status to answer
        self.experiments: dict[str, dict] = {}
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.recurring: dict[str, dict] = {}
        self.writes: list[str] = []
        self.tasks: list[dict] = []  # task details attached to every run

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def _display_filter(query: dict) -> str | None:
    raw = (query.get("filter") or [None])[0]
    if not raw:
        return None
    for pred in json.loads(raw).get("predicates", []):
        if pred.get("key") in ("display_name", "name"):
            return pred.get("stringValue") or pred.get("string_value")
    return None


class _Handler(BaseHTTPRequestHandler):
    server: FakeKFP

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self, method: str) -> None:
        srv = self.server
        url = urlparse(self.path)
        query = parse_qs(url.query)
        body = self._body()
        exempt = srv.open_healthz and url.path.endswith("/healthz")
        if srv.token and not exempt and self.headers.get("Authorization") != f"Bearer {srv.token}":
            return self._send(401, {"error": "Unauthenticated", "code": 16, "message": "token has expired"})
        key = f"{method} {url.path}"
        if key in srv.fail:
            return self._send(srv.fail[key], {"error": "boom", "code": 13, "message": "internal error"})
        path = url.path.removeprefix("/apis/v2beta1")
        new_id = str(uuid.uuid4())
        if key == "GET /apis/v2beta1/healthz":
            return self._send(200, {"multi_user": False})
        if method == "POST":
            srv.writes.append(path)
        if path == "/experiments" and method == "GET":
            name = _display_filter(query)
            found = [e for e in srv.experiments.values() if name in (None, e["display_name"])]
            return self._send(200, {"experiments": found, "total_size": len(found)})
        if path == "/experiments" and method == "POST":
            exp = {**json.loads(body), "experiment_id": new_id}
            srv.experiments[new_id] = exp
            return self._send(200, exp)
        if path == "/pipelines" and method == "GET":
            name = _display_filter(query)
            found = [p for p in srv.pipelines.values() if name in (None, p["display_name"])]
            return self._send(200, {"pipelines": found, "total_size": len(found)})
        if path == "/pipelines" and method == "POST":
            pipe = {**json.loads(body), "pipeline_id": new_id}
            srv.pipelines[new_id] = pipe
            return self._send(200, pipe)
        if path == "/pipelines/upload_version" and method == "POST":
            pipeline_id = query["pipelineid"][0]
            assert pipeline_id in srv.pipelines and b"pipelineInfo" in body
            ver = {
                "pipeline_id": pipeline_id,
                "pipeline_version_id": new_id,
                "display_name": query["name"][0],
                "description": (query.get("description") or [""])[0],
                "created_at": _now(),
            }
            srv.versions[new_id] = ver
            return self._send(200, ver)
        if path.startswith("/pipelines/") and path.endswith("/versions") and method == "GET":
            pipeline_id = path.split("/")[2]
            name = _display_filter(query)
            found = [
                v
                for v in srv.versions.values()
                if v["pipeline_id"] == pipeline_id and name in (None, v["display_name"])
            ]
            found.sort(key=lambda v: v["created_at"], reverse=True)
            return self._send(200, {"pipeline_versions": found, "total_size": len(found)})
        if path == "/runs" and method == "POST":
            run = {
                **json.loads(body),
                "run_id": new_id,
                "state": "PENDING",
                "created_at": _now(),
                "run_details": {"task_details": srv.tasks},
            }
            srv.runs[new_id] = run
            return self._send(200, run)
        if path == "/runs" and method == "GET":
            exp = (query.get("experiment_id") or [None])[0]
            found = [r for r in srv.runs.values() if exp in (None, r.get("experiment_id"))]
            found.sort(key=lambda r: r["created_at"], reverse=True)
            size = int((query.get("page_size") or ["10"])[0])
            return self._send(200, {"runs": found[:size], "total_size": len(found)})
        if path.startswith("/runs/") and method == "GET":
            return self._send(200, srv.runs[path.split("/")[2]])
        if path == "/recurringruns" and method == "POST":
            job = {**json.loads(body), "recurring_run_id": new_id}
            srv.recurring[new_id] = job
            return self._send(200, job)
        if path == "/recurringruns" and method == "GET":
            exp = (query.get("experiment_id") or [None])[0]
            name = _display_filter(query)
            found = [
                r
                for r in srv.recurring.values()
                if exp in (None, r.get("experiment_id")) and name in (None, r["display_name"])
            ]
            return self._send(200, {"recurringRuns": found, "total_size": len(found)})
        return self._send(404, {"error": f"no route {key}", "code": 5, "message": "not found"})

    def do_GET(self):  # noqa: N802 - http.server's naming
        self._handle("GET")

    def do_POST(self):  # noqa: N802
        self._handle("POST")


_clock = [0]


def _now() -> str:
    _clock[0] += 1  # strictly increasing, so "newest first" is well defined
    return f"2026-01-01T00:00:{_clock[0] % 60:02d}.{_clock[0]:06d}Z"


@pytest.fixture
def kfp_api(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client reads ~/.config/kfp/context.json
    monkeypatch.delenv("KF_PIPELINES_SA_TOKEN_PATH", raising=False)
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)
    monkeypatch.delenv("KF_PIPELINES_UI_ENDPOINT", raising=False)
    server = FakeKFP()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


# --------------------------------------------------------------------------- submit / schedule / list


def test_submit_creates_experiment_pipeline_and_run_then_reuses_them(kfp_api, package):
    url = submit(package, host=kfp_api.url, params={"times": 3}, experiment="exp", pipeline_name="tiny")
    (run,) = kfp_api.runs.values()
    assert url == f"{kfp_api.url}/#/runs/details/{run['run_id']}"
    assert run["runtime_config"]["parameters"] == {"times": 3}
    assert run["service_account"] == PIPELINE_SERVICE_ACCOUNT
    (exp,) = kfp_api.experiments.values()
    assert exp["display_name"] == "exp" and run["experiment_id"] == exp["experiment_id"]
    (pipe,) = kfp_api.pipelines.values()
    assert pipe["display_name"] == "tiny"
    assert run["pipeline_version_reference"]["pipeline_id"] == pipe["pipeline_id"]

    (version,) = kfp_api.versions.values()
    assert version["display_name"].startswith(shrink.__version__ + "-")  # <version>-<content hash>

    # The same package again: everything reused, only new runs.
    submit(package, host=kfp_api.url, experiment="exp", pipeline_name="tiny")
    submit(package, host=kfp_api.url, experiment="exp", pipeline_name="tiny")
    assert len(kfp_api.experiments) == 1 and len(kfp_api.pipelines) == 1 and len(kfp_api.versions) == 1
    assert len(kfp_api.runs) == 3
    used = {r["pipeline_version_reference"]["pipeline_version_id"] for r in kfp_api.runs.values()}
    assert used == {version["pipeline_version_id"]}


def test_version_name_clash_with_other_content_creates_nothing(kfp_api, package, tmp_path):
    submit(package, host=kfp_api.url, pipeline_name="tiny", version_name="v1")
    other = tmp_path / "other.yaml"
    other.write_text(package.read_text().replace("shrink-tiny", "shrink-tiny-2"))
    writes = len(kfp_api.writes)
    with pytest.raises(ShrinkError, match="already has a version 'v1' with different content"):
        submit(other, host=kfp_api.url, pipeline_name="tiny", version_name="v1")
    assert len(kfp_api.writes) == writes


def test_expired_token_is_a_clear_error_and_creates_nothing(kfp_api, package):
    kfp_api.token = "fresh"
    with pytest.raises(ShrinkError, match=r"refused the request \(HTTP 401\).*expired.*--token"):
        submit(package, host=kfp_api.url, token="stale")
    assert kfp_api.writes == []
    url = submit(package, host=kfp_api.url, token="fresh")
    assert "/#/runs/details/" in url and len(kfp_api.runs) == 1


def test_api_refusing_after_an_open_health_check_creates_nothing(kfp_api, package):
    kfp_api.token, kfp_api.open_healthz = "fresh", True
    with pytest.raises(ShrinkError, match=r"look up experiment 'shrink'.*HTTP 401.*no token was sent"):
        submit(package, host=kfp_api.url)
    with pytest.raises(ShrinkError, match=r"HTTP 401.*the token was rejected"):
        list_runs(kfp_api.url, token="stale")
    assert kfp_api.writes == []


def test_token_file_from_environment(kfp_api, package, tmp_path, monkeypatch):
    kfp_api.token = "from-file"
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token_file))
    submit(package, host=kfp_api.url)
    assert len(kfp_api.runs) == 1


def test_failed_run_creation_says_what_was_created(kfp_api, package):
    kfp_api.fail["POST /apis/v2beta1/runs"] = 500
    with pytest.raises(ShrinkError) as err:
        submit(package, host=kfp_api.url, experiment="exp", pipeline_name="tiny")
    message = str(err.value)
    assert "create run" in message and "HTTP 500" in message and "internal error" in message
    assert "Already created" in message and "experiment 'exp'" in message and "pipeline 'tiny'" in message
    assert not kfp_api.runs
    # The leftovers are reused, not duplicated, once the server recovers.
    del kfp_api.fail["POST /apis/v2beta1/runs"]
    submit(package, host=kfp_api.url, experiment="exp", pipeline_name="tiny")
    assert len(kfp_api.pipelines) == 1 and len(kfp_api.experiments) == 1 and len(kfp_api.runs) == 1


def test_schedule_creates_one_recurring_run(kfp_api, package):
    url = schedule(package, host=kfp_api.url, params={"text": "x"}, cron="0 3 * * 1", max_concurrency=2)
    (job,) = kfp_api.recurring.values()
    assert url == f"{kfp_api.url}/#/recurringrun/details/{job['recurring_run_id']}"
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"
    assert job["no_catchup"] is True and int(job["max_concurrency"]) == 2
    assert job["runtime_config"]["parameters"] == {"text": "x"}
    writes = len(kfp_api.writes)
    with pytest.raises(ShrinkError, match="already has a recurring run"):
        schedule(package, host=kfp_api.url, cron="0 4 * * *")
    assert len(kfp_api.writes) == writes


def test_list_runs_reports_state_and_gate(kfp_api, package):
    kfp_api.tasks = [
        {"display_name": "SLO gate", "state": "SUCCEEDED"},
        {"display_name": "Promote to production", "state": "SKIPPED"},
    ]
    for _ in range(3):
        submit(package, host=kfp_api.url, experiment="exp")
    rows = list_runs(kfp_api.url, experiment="exp", limit=2)
    assert len(rows) == 2
    newest = max(kfp_api.runs.values(), key=lambda r: r["created_at"])
    assert rows[0]["run_id"] == newest["run_id"]
    assert rows[0]["state"] == "PENDING"
    assert rows[0]["gate"] == "SUCCEEDED" and rows[0]["promote"] == "SKIPPED"
    assert rows[0]["url"].endswith(f"/#/runs/details/{newest['run_id']}")
    with pytest.raises(ShrinkError, match="no experiment 'nope'"):
        list_runs(kfp_api.url, experiment="nope")


def test_use_object_store_puts_names_not_credentials_in_the_pipeline(tmp_path):
    @dsl.pipeline(name="shrink-s3-env")
    def with_store(text: str = "hi"):
        object_store.use_object_store(_echo(text=text, times=1))

    path = tmp_path / "p.yaml"
    compiler.Compiler().compile(with_store, package_path=str(path))
    docs = list(yaml.safe_load_all(path.read_text()))
    (executor,) = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values()
    secret_env = executor["secretAsEnv"][0]
    assert secret_env["secretName"] == object_store.S3_SECRET
    assert {m["secretKey"] for m in secret_env["keyToEnv"]} == set(object_store.S3_SECRET_KEYS)
    config_env = executor["configMapAsEnv"][0]
    assert config_env["configMapName"] == object_store.S3_CONFIG_MAP
    assert {m["envVar"] for m in config_env["keyToEnv"]} == set(object_store.S3_CONFIG_KEYS)
