"""``shrink serve``: the shrink predictor under ``kserve.ModelServer``.

KServe provides the HTTP server (uvicorn + FastAPI), both protocols' routes,
the health checks, ``/metrics`` and the worker processes. What is added here,
each for a reason KServe's defaults do not cover:

* **readiness**: KServe's ``/v2/health/ready`` answers 200 whether or not a
  model is loaded; here it is 503 until a version is (:class:`ReadyDataPlane`),
  so a server following an alias with nothing promoted yet takes no traffic,
  and becomes ready without a restart when a version is promoted;
* **model metadata** with what the model is (labels, version, content hash),
  which KServe's v2 metadata schema would drop;
* **one-line errors** for bad requests: a malformed v2 body is a 400 with the
  first problem named (FastAPI's default is a 422 with a JSON list), and a
  content type that is not JSON is a 415 before any parsing;
* **request metrics** (count by status, latency) for both protocols, measured
  around the whole request, and no log line per request unless asked for;
* the **listen address** (KServe binds every interface; a local server binds
  127.0.0.1);
* **uvloop** for the one-process server too: uvicorn picks it only for a loop
  it creates itself (KServe's worker processes), while a single-process KServe
  server runs in ``asyncio.run``'s default loop;
* no **TimingMiddleware**: KServe's reads the process's CPU time twice per
  request (``getrusage``) and formats two log lines for a logger that is off;
  under load it was a third of the server's CPU (py-spy, 32 clients). The
  request metrics below measure the same wall time for Prometheus.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

import orjson

from shrink.errors import ShrinkError
from shrink.logs import log
from shrink.serving import metrics
from shrink.serving.config import ServeConfig
from shrink.serving.kserve_api import (
    DataPlane,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    ModelServer,
    RESTServer,
    ServerNotReady,
    TimingMiddleware,
    app,
    kserve_logging,
)
from shrink.serving.predictor import ShrinkPredictor

_CLIENT_ERRORS = (InvalidInput, ModelNotFound, ModelNotReady, ServerNotReady)
# Content types parsed as JSON (KServe also takes CloudEvents); b"" is a request without the header.
_JSON_TYPES = (b"application/json", b"application/cloudevents+json", b"")


class RequestMetrics:
    """ASGI middleware on the inference routes: content type check, request count by status, latency."""

    def __init__(self, app, model_name: str):
        self.app = app
        self.model_name = model_name
        self._children: dict[tuple, tuple] = {}

    async def __call__(self, scope, receive, send):
        """Pass every request on; check, time and count the POSTs to a model."""
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if scope.get("method") != "POST" or not path.startswith(("/v1/models/", "/v2/models/")):
            return await self.app(scope, receive, send)
        protocol = "v2" if path.startswith("/v2/") else "v1"
        start = time.perf_counter()
        status = {"code": 500}

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        headers = dict(scope.get("headers") or [])
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        binary = kind == b"application/octet-stream" and b"inference-header-content-length" in headers
        try:
            if kind in _JSON_TYPES or binary:
                await self.app(scope, receive, send_and_note)
            else:
                await _json_error(
                    send_and_note,
                    415,
                    f"content-type {kind.decode('latin-1')!r}: send "
                    "application/json (v2 binary tensors: application/octet-stream with "
                    "inference-header-content-length)",
                )
        finally:
            name = self.model_name if path.split("/")[3].split(":")[0] == self.model_name else "unknown"
            key = (name, protocol, status["code"])
            children = self._children.get(key)
            if children is None:  # labelled children made once per (model, protocol, status)
                children = self._children[key] = (
                    metrics.REQUESTS.labels(name, protocol, str(key[2])),
                    metrics.LATENCY.labels(name, protocol),
                )
            children[0].inc()
            children[1].observe(time.perf_counter() - start)


def _json(obj, status: int = 200):
    from starlette.responses import Response

    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def validation_message(errors: list[dict]) -> str:
    """One line for FastAPI's list of validation errors: the first one, and where it is."""
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "InferenceRequest")]
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "")
        return f"body is not valid JSON ({detail} at character {loc[0] if loc else '?'})".replace(" ()", "")
    where = ".".join(loc) or "body"
    return f"invalid request: {where}: {first.get('msg', 'does not match the v2 inference request')}".replace("\n", " ")


async def _json_error(send, status: int, message: str) -> None:
    body = orjson.dumps({"error": message})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def install(fastapi_app, predictor: ShrinkPredictor) -> None:
    """Add the metadata route, the one-line error handler and the middleware to KServe's app (once).

    Routes added before KServe adds its own are matched first, so
    ``/v2/models/<name>`` is this one. Called in every worker process: KServe's
    workers import their own copy of the app.
    """
    if getattr(fastapi_app.state, "shrink_installed", False):
        return
    fastapi_app.state.shrink_installed = True
    from fastapi.exceptions import RequestValidationError

    async def model_metadata(model_name: str):
        if model_name != predictor.name:
            raise ModelNotFound(model_name)
        return _json(predictor.metadata())

    async def validation_error(request, exc: RequestValidationError):
        return _json({"error": validation_message(exc.errors())}, 400)

    fastapi_app.add_api_route("/v2/models/{model_name}", model_metadata, methods=["GET"])
    fastapi_app.add_exception_handler(RequestValidationError, validation_error)
    fastapi_app.add_middleware(RequestMetrics, model_name=predictor.name)


class ReadyDataPlane(DataPlane):
    """KServe's data plane, with server readiness meaning "every registered model is ready"."""

    async def ready(self) -> bool:
        """False (``/v2/health/ready`` answers 503) until every model has a version loaded."""
        models = list(self.model_registry.get_models().values())
        return bool(models) and all([await m.healthy() for m in models]) and await super().ready()

    def __setstate__(self, state):
        """Unpickled in a spawned worker: that worker's own copy of the app needs the additions too."""
        self.__dict__.update(state)
        for model in self.model_registry.get_models().values():
            if isinstance(model, ShrinkPredictor):
                install(app, model)


class LeanRESTServer(RESTServer):
    """KServe's REST server without its per-request CPU timing (see the module docstring)."""

    def _add_middlewares(self, fastapi_app) -> None:
        super()._add_middlewares(fastapi_app)
        fastapi_app.user_middleware = [m for m in fastapi_app.user_middleware if m.cls is not TimingMiddleware]


class ShrinkModelServer(ModelServer):
    """KServe's server on a chosen address (KServe binds every interface), with the lean REST server."""

    def __init__(self, host: str, **kwargs):
        super().__init__(**kwargs)
        self.host = host

    async def _serve(self):
        for rest in (self._rest_server, getattr(self._rest_multiprocess_server, "_rest_server", None)):
            if rest is not None:
                rest.config.host = self.host
                rest.__class__ = LeanRESTServer  # a module-level class: pickles by name into spawned workers
        await super()._serve()


def quiet_request_logs() -> None:
    """No log line per request (KServe's timing lines, uvicorn's access log): they cost throughput."""
    for name in ("kserve.trace", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)


class OneLineRejections(logging.Filter):
    """KServe logs every rejected request with a traceback; a request's own fault gets one line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Drop the traceback of client errors (bad input, unknown model, not ready) and say what they were."""
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, _CLIENT_ERRORS):
            record.exc_info, record.exc_text = None, None
            record.msg, record.args = "rejected: %s: %s", (type(exc).__name__, exc)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def use_uvloop() -> bool:
    """Make new event loops uvloop's (libuv; faster sockets and callbacks) where it is installed."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.set_event_loop(asyncio.new_event_loop())  # KServe's start() asks for the current loop first
    return True


def settle_garbage_collector(gen0: int = 20_000) -> None:
    """Freeze what exists at start and collect young objects less often.

    Why: a request's objects are freed by reference counting; the cyclic collector
    finds almost nothing, yet with Python's default threshold (700 allocations) it
    ran every few requests and walked every live object, the modules and the
    model included (4% of a worker's CPU at 32 clients in py-spy). Objects alive
    at start never become garbage: ``gc.freeze`` takes them out of every scan.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0, gen1, gen2)


def serve(cfg: ServeConfig) -> None:
    """Run the server until SIGINT/SIGTERM; with one worker, load the model before listening."""
    kserve_logging.configure_logging()
    kserve_logging.logger.addFilter(OneLineRejections())
    if not cfg.access_log:
        quiet_request_logs()
    predictor = ShrinkPredictor(cfg)
    log.info(
        "serve: %s from %s on http://%s:%d (workers %d, threads %s, batch <= %d, wait <= %g ms, cache %d)",
        predictor.name,
        predictor.holder.source.describe(),
        cfg.host,
        cfg.port,
        cfg.workers,
        cfg.intra_op_threads,
        cfg.max_batch_size,
        cfg.max_latency_ms,
        cfg.cache_size,
    )
    if cfg.workers == 1:
        predictor.begin()  # spawned workers load their own copy instead (ShrinkPredictor.__setstate__)
        if predictor.holder.current is None and not predictor.holder.source.follows:
            raise ShrinkError(f"{cfg.model}: the model could not be loaded (the error is logged above)")
    use_uvloop()
    settle_garbage_collector()
    server = ShrinkModelServer(
        host=cfg.host, http_port=cfg.port, workers=cfg.workers, enable_grpc=False, enable_latency_logging=cfg.access_log
    )
    server.dataplane = ReadyDataPlane(model_registry=server.registered_models)
    install(app, predictor)
    server.register_model(predictor)
    server.start([])  # registered above: KServe's start() refuses models that are not ready yet
