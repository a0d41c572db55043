"""Serving: the shrink predictor under a real kserve.ModelServer on a free port, over real sockets.

Both protocols answer what ``open_classifier(...).predict`` answers; the cache,
the micro-batcher and the model version show in ``/metrics``; bad requests get
a 4xx with one line and the server keeps serving; a server following the alias
in a real SeaweedFS is not ready until a model is promoted, swaps to a newly
promoted version under load without a failed request, and keeps its model when
the alias names a missing or tampered version. Servers run as subprocesses
(``python -m shrink.cli serve``), exactly as ``shrink serve`` runs them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from shrink import storage
from shrink.config import from_dict
from shrink.errors import ShrinkError
from shrink.serving.config import ServeConfig

ROOT = Path(__file__).resolve().parents[1]
JSON = "application/json"


# --------------------------------------------------------------------------- a real server, a plain client


def http(method: str, url: str, body=None, content_type: str | None = JSON, timeout: float = 30.0):
    """(status, headers, parsed JSON body or raw text) of one HTTP request."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if content_type and data is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, headers, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, headers, raw = exc.code, dict(exc.headers), exc.read()
    try:
        return status, {k.lower(): v for k, v in headers.items()}, json.loads(raw)
    except ValueError:
        return status, {k.lower(): v for k, v in headers.items()}, raw.decode()


class Server:
    """``shrink serve`` in a subprocess on a free loopback port; stopped with SIGTERM."""

    def __init__(self, workdir: Path, *args: str, name: str = "model"):
        self.port = storage.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = name
        self.log = workdir / f"serve-{self.port}.log"
        workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cmd = [
            sys.executable,
            "-m",
            "shrink.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--name",
            name,
            *args,
        ]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)

    def wait_live(self, timeout: float = 120.0) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
            try:
                if http("GET", f"{self.url}/v2/health/live", timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not live after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def wait_for(self, predicate, what: str, timeout: float = 60.0):
        """Poll ``predicate()`` until it returns something truthy (the server works in the background)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"{what}: not within {timeout} s:\n{self.log.read_text()[-3000:]}")

    def v1(self, texts, name: str | None = None, **kw):
        return http("POST", f"{self.url}/v1/models/{name or self.name}:predict", {"instances": texts}, **kw)

    def v2(self, texts, name: str | None = None, **kw):
        body = {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]}
        return http("POST", f"{self.url}/v2/models/{name or self.name}/infer", body, **kw)

    def metadata(self) -> dict:
        return http("GET", f"{self.url}/v2/models/{self.name}")[2]

    def metric(self, name: str, **labels) -> float:
        """One sample of ``/metrics`` (0 when the series does not exist yet)."""
        text = http("GET", f"{self.url}/metrics")[2]
        total = 0.0
        for line in text.splitlines():
            match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
            if match:
                found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
                if all(found.get(k) == str(v) for k, v in labels.items()):
                    total += float(match.group(2))
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def reference(exported):
    from shrink.runtime import open_classifier

    return open_classifier(exported)


@pytest.fixture(scope="module")
def server(tmp_path_factory, exported):
    """The ONNX model with the defaults: cache on, greedy batching."""
    srv = Server(tmp_path_factory.mktemp("serve"), "--model", str(exported)).wait_live()
    yield srv
    srv.stop()


def _predict_labels(reference, texts):
    """What the benchmark measures: ``Classifier.predict`` on one request at a time."""
    return [reference.label_names[int(reference.predict([t])[0])] for t in texts]


# --------------------------------------------------------------------------- protocols


@pytest.mark.timeout(300)
def test_both_protocols_answer_what_open_classifier_predicts(server, reference, test_texts, exported):
    from shrink.artifact import read_meta

    texts = test_texts[:60]
    expected = _predict_labels(reference, texts)
    meta = read_meta(exported)
    version = f"local-{meta.content_hash()[:12]}"
    status, headers, body = server.v1(texts[:30])
    assert status == 200, body
    assert [p["label"] for p in body["predictions"]] == expected[:30]
    assert body["model_version"] == headers["x-model-version"] == version
    assert all(0 < p["score"] <= 1 and p["out_of_scope"] == (p["label"] == "oos") for p in body["predictions"])

    status, headers, body = server.v2(texts[30:])
    assert status == 200, body
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["label"]["datatype"] == "BYTES" and outputs["label"]["data"] == expected[30:]
    assert outputs["score"]["datatype"] == "FP32" and outputs["out_of_scope"]["datatype"] == "BOOL"
    assert outputs["label"]["shape"] == [30] and len(outputs["score"]["data"]) == 30
    assert body["model_version"] == headers["x-model-version"] == version
    # The score is the label's softmax probability, as the reference computes it.
    import numpy as np

    logits = reference.logits(reference.encode(texts[30:31]))[0]
    prob = float(np.exp(logits - logits.max()).max() / np.exp(logits - logits.max()).sum())
    assert abs(outputs["score"]["data"][0] - prob) < 1e-5

    # One text at a time over v1 too: the same labels (each a batch of its own or shared, as it comes).
    singles = [server.v1([t])[2]["predictions"][0]["label"] for t in texts[:10]]
    assert singles == expected[:10]


def test_health_metadata_and_metrics(server, exported):
    from shrink.artifact import read_meta

    meta = read_meta(exported)
    assert http("GET", f"{server.url}/v2/health/live")[0] == 200
    status, _, body = http("GET", f"{server.url}/v2/health/ready")
    assert (status, body) == (200, {"ready": True})
    assert http("GET", f"{server.url}/v2/models/model/ready")[0] == 200
    info = server.metadata()
    assert info["name"] == "model" and info["ready"] is True
    assert info["labels"] == meta.label_names and info["content_hash"] == meta.content_hash()
    assert info["versions"] == [info["model_version"]] and info["platform"] == "shrink-onnx"
    assert info["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert {o["name"] for o in info["outputs"]} == {"label", "score", "out_of_scope"}
    assert server.metric("shrink_serve_model_info", version=info["model_version"], format="onnx") == 1
    assert server.metric("shrink_serve_model_ready", model="model") == 1
    before = server.metric("shrink_serve_requests_total", model="model", protocol="v1", code="200")
    assert server.v1(["how many calories in an apple"])[0] == 200
    assert server.metric("shrink_serve_requests_total", model="model", protocol="v1", code="200") == before + 1
    assert server.metric("shrink_serve_request_seconds_count", model="model", protocol="v1") >= before + 1


def test_the_served_out_of_scope_answer_is_the_artifacts_rule(tmp_path, exported, clinc_slice):
    """A calibrated copy (oos rule in shrink.json) serves the rule's decisions on both protocols."""
    from shrink.calibration import calibrate
    from shrink.config import OosConfig
    from shrink.data import load_prepared
    from shrink.runtime import open_classifier

    model = tmp_path / "calibrated"
    rule = calibrate(exported, clinc_slice, model, OosConfig(expected_oos_share=0.5))
    texts = list(load_prepared(clinc_slice)[0]["validation"]["text"])
    clf = open_classifier(model)
    predicted, logits = clf.predict_all(texts)
    flipped = [t for t, p, r in zip(texts, predicted, logits.argmax(axis=1), strict=True) if p != r][:8]
    assert flipped, "the rule changed no answer: nothing to check"
    srv = Server(tmp_path / "serve", "--model", str(model)).wait_live()
    try:
        info = srv.metadata()
        assert info["oos_rule"] == {
            "rule": rule.rule,
            "threshold": rule.threshold,
            "label": "oos",
            "expected_oos_share": 0.5,
        }
        assert info["oos_labels"] == ["oos"]
        status, _, body = srv.v1(flipped)
        assert status == 200
        assert [p["label"] for p in body["predictions"]] == ["oos"] * len(flipped)
        assert all(p["out_of_scope"] and p["score"] < rule.threshold for p in body["predictions"])
        status, _, body = srv.v2(flipped)
        out = {o["name"]: o["data"] for o in body["outputs"]}
        assert status == 200 and out["label"] == ["oos"] * len(flipped) and all(out["out_of_scope"])
    finally:
        srv.stop()


def test_a_repeated_text_is_a_cache_hit(server):
    hits = server.metric("shrink_serve_cache_hits_total", model="model")
    misses = server.metric("shrink_serve_cache_misses_total", model="model")
    first = server.v1(["Please book me a FLIGHT to Lisbon"])[2]["predictions"]
    # The same text as the tokenizer sees it (uncased, spaces collapsed): answered from the cache.
    again = server.v2(["  please book me a flight   to lisbon "])[2]
    assert server.metric("shrink_serve_cache_misses_total", model="model") == misses + 1
    assert server.metric("shrink_serve_cache_hits_total", model="model") == hits + 1
    assert again["outputs"][0]["data"] == [first[0]["label"]]
    assert again["outputs"][1]["data"] == [first[0]["score"]]
    # A text that tokenizes differently is not.
    server.v1(["please book me a flight to lisbon!"])
    assert server.metric("shrink_serve_cache_misses_total", model="model") == misses + 2


def test_a_repeat_that_arrives_while_its_first_copy_is_computed_waits_for_that_answer(exported):
    """Coalescing: concurrent copies of a text (across requests and within one) cost one model run."""
    import asyncio

    from prometheus_client import REGISTRY

    from shrink.serving.predictor import ShrinkPredictor

    def hits():
        return REGISTRY.get_sample_value("shrink_serve_cache_hits_total", {"model": "model"}) or 0.0

    p = ShrinkPredictor(ServeConfig(model=str(exported), max_latency_ms=200))
    p.begin()
    before = hits()
    runs = []
    run = p.batcher._run
    p.batcher._run = lambda texts: runs.append(list(texts)) or run(texts)

    async def ask():
        return await asyncio.gather(
            p.answer(["what is my balance"]),
            p.answer(["What is my  balance", "play some music"]),
            p.answer(["play some music", "what is my balance"]),
        )

    try:
        (a, _), (b, _), (c, _) = asyncio.run(ask())
    finally:
        p.stop()
    assert sorted(t for batch in runs for t in batch) == ["play some music", "what is my balance"]
    assert a[0] == b[0] == c[1] and b[1] == c[0]
    assert hits() - before == 3  # 5 texts, 2 computed: the other 3 waited for those answers


@pytest.mark.timeout(300)
@pytest.mark.parametrize("where", ["event loop", "model thread"])
def test_concurrent_requests_are_batched(tmp_path, exported, reference, test_texts, where):
    # The batch waits for company up to 10 s, and closes when 8 texts are in: 8 concurrent requests
    # make exactly one batch of 8, however slowly the machine runs them.
    flags = ["--model-thread"] if where == "model thread" else []
    srv = Server(
        tmp_path,
        "--model",
        str(exported),
        "--max-batch-size",
        "8",
        "--max-latency-ms",
        "10000",
        "--cache-size",
        "0",
        *flags,
    ).wait_live()
    try:
        texts = test_texts[:8]
        results = [None] * len(texts)

        def ask(i):
            results[i] = srv.v1([texts[i]], timeout=60)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(texts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=90)
        assert all(r is not None and r[0] == 200 for r in results), results
        assert [r[2]["predictions"][0]["label"] for r in results] == _predict_labels(reference, texts)
        assert srv.metric("shrink_serve_batch_size_count", model="model") == 1
        assert srv.metric("shrink_serve_batch_size_sum", model="model") == 8
        assert srv.metric("shrink_serve_batch_size_bucket", model="model", le="4.0") == 0
        # One request larger than the batch limit runs alone, in chunks of the limit.
        status, _, body = srv.v1(test_texts[8:28])
        assert status == 200 and len(body["predictions"]) == 20
        assert [p["label"] for p in body["predictions"]] == _predict_labels(reference, test_texts[8:28])
    finally:
        srv.stop()


# --------------------------------------------------------------------------- bad input

LONG = "please tell me my balance " * 4000  # 104,000 characters


def _raw(server, route, body: bytes, content_type=JSON):
    return http("POST", f"{server.url}{route}", body, content_type=content_type)


BAD = {
    "v1 empty list": lambda s: s.v1([]),
    "v2 empty list": lambda s: s.v2([]),
    "v1 not strings": lambda s: s.v1(["fine", 3, None]),
    "v2 not strings": lambda s: s.v2(["fine", {"a": 1}]),
    "v1 instances not a list": lambda s: http("POST", f"{s.url}/v1/models/model:predict", {"instances": "hi"}),
    "v2 wrong datatype": lambda s: http(
        "POST",
        f"{s.url}/v2/models/model/infer",
        {"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]},
    ),
    "v2 shape disagrees": lambda s: http(
        "POST",
        f"{s.url}/v2/models/model/infer",
        {"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": ["a"]}]},
    ),
    "v1 wrong content type": lambda s: _raw(s, "/v1/models/model:predict", b'{"instances": ["hi"]}', "text/plain"),
    "v2 wrong content type": lambda s: _raw(s, "/v2/models/model/infer", b"hello", "application/x-www-form-urlencoded"),
    "v1 malformed JSON": lambda s: _raw(s, "/v1/models/model:predict", b'{"instances": ["hi"'),
    "v2 malformed JSON": lambda s: _raw(s, "/v2/models/model/infer", b'{"inputs": [{"name": '),
    "v2 not an inference request": lambda s: _raw(s, "/v2/models/model/infer", b'{"inputs": 5}'),
    "v1 unknown model": lambda s: s.v1(["hi"], name="nope"),
    "v2 unknown model": lambda s: s.v2(["hi"], name="nope"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_gets_a_4xx_with_one_line_and_the_server_keeps_serving(server, case):
    status, _, body = BAD[case](server)
    assert 400 <= status < 500, (status, body)
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    assert body["error"] and "\n" not in body["error"] and len(body["error"]) < 300, body["error"]
    expected = {"unknown model": 404, "content type": 415}
    assert status == next((code for key, code in expected.items() if key in case), 400)
    assert server.v1(["what's the weather like"])[0] == 200


def test_a_100000_character_text_is_truncated_and_answered(server, reference):
    status, _, body = server.v1([LONG, "short one"])
    assert status == 200, body
    assert body["predictions"][0]["label"] == _predict_labels(reference, [LONG[:10000]])[0]
    assert len(body["predictions"]) == 2


# ------------------------------------------------------------------ the alias: readiness, hot swap, bad versions


def _tampered_copy(src: Path, out: Path) -> Path:
    shutil.copytree(src, out)
    with open(out / "tokenizer.json", "a") as fh:
        fh.write(" ")  # still valid JSON, but not the bytes shrink.json names
    return out


@pytest.mark.timeout(600)
def test_alias_not_ready_until_promoted_then_hot_swap_under_load_and_bad_versions_keep_serving(
    seaweed, tmp_path, exported, optimized
):
    from shrink.artifact import read_meta
    from shrink.promote import alias_uri, promote
    from tests.factories import REGISTRY, decision_for, fresh_name

    name = fresh_name()
    alias = alias_uri(name, REGISTRY)
    srv = Server(tmp_path / "srv", "--model", alias, "--poll-seconds", "0.2", name=name).wait_live()
    try:
        # Nothing promoted yet: live, not ready, inference refused with 503.
        assert http("GET", f"{srv.url}/v2/health/ready")[0] == 503
        assert http("GET", f"{srv.url}/v2/models/{name}/ready")[0] == 503
        status, _, body = srv.v1(["hello"])
        assert status == 503 and "not ready" in body["error"]
        assert srv.metadata()["ready"] is False

        meta1 = read_meta(exported)
        decision, cfg = decision_for(name, meta1, name)
        first = promote(exported, decision, cfg, name, REGISTRY)
        srv.wait_for(lambda: http("GET", f"{srv.url}/v2/health/ready")[0] == 200, "ready after promotion")
        status, headers, body = srv.v1(["play some jazz"])
        assert status == 200 and body["model_version"] == headers["x-model-version"] == first["version"]
        assert srv.metadata()["content_hash"] == meta1.content_hash()

        # Hot swap under load: clients never stop; a new version is promoted meanwhile.
        seen: list[tuple[float, float, int, str | None]] = []
        stop = threading.Event()

        def client(k):
            i = 0
            while not stop.is_set():
                start = time.monotonic()
                status, headers, body = srv.v1([f"what is the weather in city {k}-{i}", "play music"])
                seen.append((start, time.monotonic(), status, body.get("model_version") if status == 200 else None))
                i += 1

        clients = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in clients:
            t.start()
        try:
            srv.wait_for(lambda: len(seen) >= 20, "traffic before the swap")
            meta2 = read_meta(optimized)
            decision, cfg = decision_for(name, meta2, name, candidate="onnx_optimized")
            second = promote(optimized, decision, cfg, name, REGISTRY)
            srv.wait_for(lambda: any(v == second["version"] for *_, v in seen), "answers from the new version")
            count = len(seen)
            srv.wait_for(lambda: len(seen) >= count + 20, "traffic after the swap")
        finally:
            stop.set()
            for t in clients:
                t.join(timeout=60)
        assert [s for s in seen if s[2] != 200] == []
        assert {v for *_, v in seen} == {first["version"], second["version"]}
        first_new = min(end for _, end, _, v in seen if v == second["version"])
        late_old = [s for s in seen if s[0] > first_new and s[3] == first["version"]]
        assert late_old == [], "a request sent after the swap was answered by the old version"
        assert srv.metric("shrink_serve_model_swaps_total", model=name) == 2
        assert srv.metric("shrink_serve_model_info", version=second["version"]) == 1
        assert srv.metric("shrink_serve_model_info", version=first["version"]) == 0

        # The alias names a version that is not there, then one whose files were tampered with:
        # each fails (logged, counted) and the current version keeps serving.
        s3 = storage.client()
        bucket, key = storage.parse_uri(alias)
        base = dict(second)
        missing = {**base, "version": "20990101T000000Z-missing", "uri": f"s3://{bucket}/{name}/nothing-here/"}
        s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(missing).encode(), ContentType=JSON)
        srv.wait_for(
            lambda: srv.metric("shrink_serve_model_failures_total", model=name, stage="fetch") >= 1,
            "the missing version counted as a failure",
        )
        tampered_dir = _tampered_copy(exported, tmp_path / "tampered")
        tampered_uri = f"s3://{bucket}/{name}/20990102T000000Z-tampered/"
        storage.upload_dir(tampered_dir, tampered_uri)  # a complete upload of the wrong bytes
        tampered = {
            **base,
            "version": "20990102T000000Z-tampered",
            "uri": tampered_uri,
            "content_hash": meta1.content_hash(),
        }
        s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(tampered).encode(), ContentType=JSON)
        srv.wait_for(
            lambda: srv.metric("shrink_serve_model_failures_total", model=name, stage="fetch") >= 2,
            "the tampered version counted as a failure",
        )
        status, headers, body = srv.v1(["play some jazz"])
        assert status == 200 and body["model_version"] == headers["x-model-version"] == second["version"]
        assert http("GET", f"{srv.url}/v2/health/ready")[0] == 200
        log = srv.log.read_text()
        assert "20990101T000000Z-missing failed" in log and "20990102T000000Z-tampered failed" in log
        assert "sha256 mismatch" in log
    finally:
        srv.stop()


# --------------------------------------------------------------------------- workers, memory, CLI, config


@pytest.mark.timeout(300)
def test_two_workers_each_serve_their_own_copy(tmp_path, exported, reference, test_texts):
    srv = Server(tmp_path, "--model", str(exported), "--workers", "2").wait_live()
    try:
        srv.wait_for(lambda: http("GET", f"{srv.url}/v2/health/ready")[0] == 200, "workers ready")
        texts = test_texts[:6]
        for _ in range(3):  # connections land on either worker
            status, _, body = srv.v1(texts)
            assert status == 200 and [p["label"] for p in body["predictions"]] == _predict_labels(reference, texts)
    finally:
        srv.stop()


def test_onnx_is_served_without_importing_torch(exported):
    code = (
        "import asyncio, sys\n"
        "from shrink.serving.config import ServeConfig\n"
        "from shrink.serving.predictor import ShrinkPredictor\n"
        f"p = ShrinkPredictor(ServeConfig(model={str(exported)!r}))\n"
        "p.begin()\n"
        "answers, version = asyncio.run(p.answer(['what is my balance', 'play music']))\n"
        "assert len(answers) == 2 and p.ready, answers\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False", "False"]


def test_a_serving_process_leaves_out_what_kserve_imports_for_clusters_and_dataframes(exported):
    """``shrink serve`` marks its process lean: no Kubernetes client, no pandas or pyarrow, nothing lost."""
    code = (
        "import asyncio, sys\n"
        "from shrink.serving import lean\n"
        "lean.enter()\n"
        "from shrink.serving.config import ServeConfig\n"
        "from shrink.serving.predictor import ShrinkPredictor\n"
        "from shrink.serving.server import ShrinkModelServer\n"
        f"p = ShrinkPredictor(ServeConfig(model={str(exported)!r}))\n"
        "p.begin()\n"
        "answers, version = asyncio.run(p.answer(['what is my balance', 'play music']))\n"
        "assert len(answers) == 2 and p.ready, answers\n"
        "loaded = [m for m in ('kubernetes', 'pyarrow', 'torch') if m in sys.modules]\n"
        "import pandas\n"
        "try:\n"
        "    pandas.DataFrame({'a': [1]})\n"
        "except RuntimeError as exc:\n"
        "    refused = 'serving process' in str(exc)\n"
        "import kserve\n"
        "print(loaded, refused, kserve.KServeClient.__name__, 'kubernetes' in sys.modules,\n"
        "      callable(pandas.concat), sys.modules['pandas'] is not pandas)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "SHRINK_SERVING_PROCESS"} | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Nothing of the cluster client or pandas while serving; KServe's full package and pandas still load on use.
    assert proc.stdout.split() == ["[]", "True", "KServeClient", "True", "True", "True"]


def test_a_serving_process_still_serves_a_pytorch_artifact(tiny_artifact):
    """transformers asks for pandas' spec and may import it: the placeholder must not break a PyTorch model."""
    code = (
        "import asyncio\n"
        "from shrink.serving import lean\n"
        "lean.enter()\n"
        "from shrink.serving.config import ServeConfig\n"
        "from shrink.serving.predictor import ShrinkPredictor\n"
        f"p = ShrinkPredictor(ServeConfig(model={str(tiny_artifact)!r}))\n"
        "p.begin()\n"
        "answers, version = asyncio.run(p.answer(['what is my balance']))\n"
        "print(p.ready, len(answers))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SHRINK_SERVING_PROCESS"} | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True", "1"]


def test_the_rest_server_leaves_out_kserves_per_request_cpu_timing():
    from fastapi import FastAPI

    from shrink.serving.kserve_api import RESTServer, TimingMiddleware
    from shrink.serving.server import LeanRESTServer

    def middlewares(cls):
        app, rest = FastAPI(), object.__new__(cls)
        rest.access_log_format = None
        cls._add_middlewares(rest, app)
        return [m.cls for m in app.user_middleware]

    assert TimingMiddleware in middlewares(RESTServer)  # KServe's own adds it ...
    assert TimingMiddleware not in middlewares(LeanRESTServer)  # ... shrink's does not


def test_the_garbage_collector_is_settled_for_serving():
    import gc

    from shrink.serving.server import settle_garbage_collector

    threshold = gc.get_threshold()
    try:
        settle_garbage_collector(gen0=12_345)
        assert gc.get_threshold()[0] == 12_345 and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_serve_cli_fails_with_one_line_for_a_missing_model(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "shrink.cli",
            "serve",
            "--model",
            str(tmp_path / "nope"),
            "--port",
            str(storage.free_port()),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "could not be loaded" in proc.stderr and "no such model directory" in proc.stderr


def test_serve_config_is_checked():
    cfg = from_dict(ServeConfig, {"model": "s3://shrink-models/clinc150-intent/production.json"})
    assert cfg.follows_alias and cfg.model_name == "clinc150-intent"
    assert from_dict(ServeConfig, {"model": "/mnt/models"}).model_name == "model"
    for bad, match in (
        ({"model": "s3://b/x.json"}, "production.json"),
        ({"model": "m", "port": 0}, "port"),
        ({"model": "m", "max_batch_size": 0}, "max_batch_size"),
        ({"model": "m", "cache_sizee": 3}, "unknown key 'cache_sizee'"),
        ({"model": "m", "oos_threshold": 2.0}, "oos_threshold"),
    ):
        with pytest.raises(ShrinkError, match=match):
            from_dict(ServeConfig, bad, "serve")


# --------------------------------------------------------------------------- servability and the cluster manifests


def test_check_servable_accepts_a_pytorch_artifact(tiny_artifact):
    from shrink.serving import check_servable

    check_servable(tiny_artifact)  # FP32 PyTorch through open_classifier's torch path


def test_check_servable_loads_and_answers_through_the_serving_path(tmp_path, exported):
    from shrink.artifact import read_meta, reseal
    from shrink.serving import check_servable

    check_servable(exported)
    with pytest.raises(ShrinkError, match="not servable.*sha256 mismatch"):
        check_servable(_tampered_copy(exported, tmp_path / "tampered"))
    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    (broken / "model.onnx").write_bytes(b"not an onnx graph")
    reseal(broken, like=read_meta(exported))
    with pytest.raises(ShrinkError, match="not servable.*ONNX Runtime cannot load it"):
        check_servable(broken)


def test_inference_service_names_the_shrink_runtime_for_every_format(tmp_path):
    from shrink.serving.manifest import MODEL_FORMATS, RUNTIME, inference_service
    from tests.factories import make_artifact

    for fmt in ("onnx", "pytorch"):
        _, meta = make_artifact(tmp_path / fmt, seed=1, fmt=fmt)
        record = {"hardware": {"cores_used": 2}, "memory": {"peak_rss_mb": 300.0}}
        isvc = inference_service("CLINC150 intent", "v1", "s3://shrink-models/x/v1/", meta, record)
        model = isvc["spec"]["predictor"]["model"]
        assert isvc["metadata"]["name"] == "clinc150-intent"
        assert model["runtime"] == RUNTIME == "shrink-serve"
        assert model["modelFormat"] == {"name": MODEL_FORMATS[fmt], "version": "1"}
        assert model["storageUri"] == "s3://shrink-models/x/v1/" and model["args"] == ["--workers", "2"]
        assert model["resources"]["limits"] == {"cpu": "2", "memory": "1201Mi"}
