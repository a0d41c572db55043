"""The shrink predictor: a ``kserve.Model`` that takes raw texts and answers label, score and out of scope.

Both protocols KServe speaks reach :meth:`ShrinkPredictor.predict`: the Open
Inference Protocol v2 (``POST /v2/models/<name>/infer``, one BYTES input of
texts; outputs ``label`` BYTES, ``score`` FP32 and ``out_of_scope`` BOOL) as a
``kserve.InferRequest``, and KServe v1 (``POST /v1/models/<name>:predict``,
``{"instances": [text, ...]}``) as a dict. Texts go through the answer cache,
then the micro-batcher, then the model version being served; every response
names that version (``model_version`` in the body, ``x-model-version`` header).

Bad input is a ``kserve.errors.InvalidInput``: HTTP 400 with one line that says
what is wrong. No model loaded yet is ``ModelNotReady``: HTTP 503.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from typing import Any

from shrink.serving import metrics
from shrink.serving.answers import Answer, AnswerCache, LoadedModel, ModelVersion
from shrink.serving.batching import MicroBatcher
from shrink.serving.config import ServeConfig
from shrink.serving.kserve_api import InferOutput, InferRequest, InferResponse, InvalidInput, Model, ModelNotReady
from shrink.serving.source import open_source
from shrink.serving.swap import ModelHolder

VERSION_HEADER = "x-model-version"
INPUT_NAME = "text"


class ShrinkPredictor(Model):
    """Serves the model ``cfg.model`` names, following the registry alias when it is one.

    Readiness is "a version is loaded": until then ``/v2/health/ready``,
    ``/v2/models/<name>/ready`` and inference answer 503, and the server starts
    anyway (an alias with nothing promoted yet is a normal state).
    """

    def __init__(self, cfg: ServeConfig):
        self.holder = None  # before Model.__init__, which sets ``ready``
        super().__init__(cfg.model_name, return_response_headers=True)
        self.cfg = cfg
        self.holder = ModelHolder(open_source(cfg), cfg, on_swap=self._swapped, on_failure=self._failed)
        self.cache = AnswerCache(cfg.cache_size)
        self.batcher = MicroBatcher(
            self._run_batch,
            cfg.max_batch_size,
            cfg.max_latency_ms,
            on_batch=metrics.BATCH_SIZE.labels(self.name).observe,
            model_thread=cfg.model_thread,
        )
        # Labelled children made once: ``labels()`` on every request costs more than the count itself.
        self._texts = metrics.TEXTS.labels(self.name)
        self._hits, self._misses = metrics.CACHE_HITS.labels(self.name), metrics.CACHE_MISSES.labels(self.name)
        self._entries = metrics.CACHE_ENTRIES.labels(self.name)
        self._info: tuple | None = None
        # (version, cache key) -> the future answer of a text a batch is computing now.
        self._in_flight: dict[tuple[str, str], asyncio.Future] = {}
        metrics.READY.labels(self.name).set(0)

    # KServe starts extra workers (``workers > 1``) as spawned processes that receive the
    # registered models pickled: each worker gets the settings and loads its own copy.
    def __getstate__(self) -> dict[str, Any]:
        return {"cfg": self.cfg}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["cfg"])
        self.begin()

    def begin(self) -> None:
        """Load what the source names now (if anything), then follow it."""
        self.holder.refresh()
        self.holder.follow()

    @property
    def ready(self) -> bool:
        """Whether a version is loaded and answering."""
        return self.holder is not None and self.holder.current is not None

    @ready.setter
    def ready(self, value: bool) -> None:
        """Ignored: KServe sets ``ready`` on start and stop, but readiness is only "a version is loaded"."""

    def load(self) -> bool:
        """KServe calls this for a model that is not ready; loading happens in :meth:`begin` instead."""
        return self.ready

    async def healthy(self) -> bool:
        """Ready means a version is loaded (KServe's model and server readiness ask this)."""
        return self.ready

    def stop(self) -> None:
        """Stop following the source and the batcher."""
        self.holder.stop()
        self.batcher.close()

    # ------------------------------------------------------------------ version changes

    def _swapped(self, new: LoadedModel, old: LoadedModel | None) -> None:
        if self._info is not None:
            metrics.MODEL_INFO.remove(*self._info)
        v, meta = new.version, new.meta
        self._info = (self.name, v.version, v.content_hash, v.candidate or "", meta.format, meta.precision)
        metrics.MODEL_INFO.labels(*self._info).set(1)
        metrics.SWAPS.labels(self.name).inc()
        metrics.READY.labels(self.name).set(1)
        metrics.LOAD_SECONDS.labels(self.name).set(new.load_seconds)

    def _failed(self, stage: str, version: ModelVersion | None, reason: str) -> None:
        metrics.FAILURES.labels(self.name, stage).inc()

    # ------------------------------------------------------------------ metadata

    def get_input_types(self) -> list[dict]:
        """One BYTES tensor of texts, any number of them."""
        return [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict]:
        """Label, its probability, and whether it is out of scope, per text."""
        return [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "score", "datatype": "FP32", "shape": [-1]},
            {"name": "out_of_scope", "datatype": "BOOL", "shape": [-1]},
        ]

    def metadata(self) -> dict[str, Any]:
        """``/v2/models/<name>``: the v2 fields, plus what the model is (labels, version, content hash)."""
        model = self.holder.current
        out: dict[str, Any] = {
            "name": self.name,
            "versions": [],
            "platform": "shrink",
            "inputs": self.get_input_types(),
            "outputs": self.get_output_types(),
            "ready": model is not None,
            "source": self.holder.source.describe(),
        }
        if model is not None:
            v, meta = model.version, model.meta
            out.update(
                versions=[v.version],
                platform=f"shrink-{meta.format}",
                model_version=v.version,
                content_hash=v.content_hash,
                candidate=v.candidate,
                format=meta.format,
                precision=meta.precision,
                technique=meta.technique,
                labels=model.labels,
                oos_labels=model.oos_labels,
                oos_rule=model.oos_rule_summary(),
                max_length=model.classifier.max_length,
                previous_version=self.holder.previous_version,
            )
        return out

    # ------------------------------------------------------------------ inference

    def _run_batch(self, texts: list[str]) -> tuple[list[Answer], LoadedModel]:
        """On the model thread: the version current when the batch starts answers all of it."""
        model = self.holder.current
        if model is None:
            raise ModelNotReady(self.name)
        return model.answer(texts), model

    async def answer(self, texts: list[str]) -> tuple[list[Answer], ModelVersion]:
        """Answers for ``texts`` from the cache or the model, all from one model version.

        A text whose answer is being computed right now (for another request, or
        an earlier copy in this one) waits for that answer instead of running
        again, and counts as a hit: with repeated queries and many clients a
        repeat often arrives while its first copy is still queued.
        """
        texts = [t[: self.cfg.max_text_chars] for t in texts]
        model = self.holder.current
        if model is None:
            raise ModelNotReady(self.name, "No model version is loaded yet.")
        self._texts.inc(len(texts))
        if self.cfg.cache_size <= 0:
            answers, model = await self.batcher.submit(texts)
            return answers, model.version
        version = model.version.version
        keys = [model.key(t) for t in texts]
        found = [self.cache.get(version, k) for k in keys]
        loop = asyncio.get_running_loop()
        own, waiting = [], {}
        for i, answer in enumerate(found):
            if answer is not None:
                continue
            slot = (version, keys[i])
            if slot in self._in_flight:
                waiting[i] = self._in_flight[slot]
            else:
                self._in_flight[slot] = future = loop.create_future()
                future.add_done_callback(_retrieved)
                own.append(i)
        self._hits.inc(len(texts) - len(own))
        self._misses.inc(len(own))
        ran_models = {model}
        if own:
            try:
                computed, ran = await self.batcher.submit([texts[i] for i in own])
            except BaseException:
                self._settle(version, [keys[i] for i in own], None, None)
                raise
            self._settle(version, [keys[i] for i in own], computed, ran)
            for i, answer in zip(own, computed, strict=True):
                found[i] = answer
            ran_models.add(ran)
        retry = []
        for i, future in waiting.items():
            try:
                found[i], ran = await asyncio.shield(future)  # shielded: this client leaving cancels only itself
                ran_models.add(ran)
            except _Unanswered:  # the request computing it failed or went away: compute it here
                retry.append(i)
        if retry:
            computed, ran = await self.batcher.submit([texts[i] for i in retry])
            for i, answer in zip(retry, computed, strict=True):
                found[i] = answer
            ran_models.add(ran)
        ran = max(ran_models, key=lambda m: m is not model)  # the model that ran, if not the one asked
        if len({m.version.version for m in ran_models}) > 1:  # swapped meanwhile: all of it from the new version
            found, ran = await self.batcher.submit(texts)
            for text, answer in zip(texts, found, strict=True):
                self.cache.put(ran.version.version, ran.key(text), answer)
        if ran is not model:
            self.cache.drop_other_versions(ran.version.version)
        self._entries.set(len(self.cache))
        return found, ran.version

    def _settle(self, version: str, keys: list[str], answers: list[Answer] | None, ran: LoadedModel | None) -> None:
        """Cache computed answers (of the version asked for) and hand them to the requests waiting for them."""
        for n, key in enumerate(keys):
            future = self._in_flight.pop((version, key), None)
            if answers is not None and ran.version.version == version:
                self.cache.put(version, key, answers[n])
            if future is not None and not future.done():
                if answers is None:
                    future.set_exception(_Unanswered())
                else:
                    future.set_result((answers[n], ran))

    def _parse(self, payload: Any) -> tuple[list[str], str]:
        if isinstance(payload, InferRequest):
            return _v2_texts(payload, self.cfg.max_request_texts), "v2"
        if isinstance(payload, dict):
            return _v1_texts(payload, self.cfg.max_request_texts), "v1"
        raise InvalidInput(
            f"request body is {type(payload).__name__}; send JSON with 'instances' (v1) or 'inputs' (v2)"
        )

    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: dict[str, str] | None = None
    ) -> Any:
        """Answer a v1 dict or a v2 ``InferRequest``; the version that answered goes in a header too."""
        texts, protocol = self._parse(payload)
        answers, version = await self.answer(texts)
        if response_headers is not None:
            response_headers[VERSION_HEADER] = version.version
        if protocol == "v1":
            return {
                "predictions": [{"label": a.label, "score": a.score, "out_of_scope": a.out_of_scope} for a in answers],
                "model_name": self.name,
                "model_version": version.version,
            }
        n = len(answers)
        return InferResponse(
            response_id=payload.id or uuid.uuid4().hex,
            model_name=self.name,
            model_version=version.version,
            infer_outputs=[
                InferOutput("label", [n], "BYTES", [a.label for a in answers]),
                InferOutput("score", [n], "FP32", [a.score for a in answers]),
                InferOutput("out_of_scope", [n], "BOOL", [a.out_of_scope for a in answers]),
            ],
            requested_outputs=payload.request_outputs,
        )


class _Unanswered(Exception):
    """The request computing a text did not get its answer (failed or went away)."""


def _retrieved(future: asyncio.Future) -> None:
    """Mark a shared future's exception as seen: nobody may be waiting for it."""
    if not future.cancelled():
        future.exception()


def _check_texts(texts: list, where: str, limit: int) -> list[str]:
    if not texts:
        raise InvalidInput(f"{where} is empty: send at least one text")
    if len(texts) > limit:
        raise InvalidInput(f"{where} holds {len(texts)} texts; at most {limit} per request")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInput(f"{where}[{i}] is {type(text).__name__} {str(text)[:40]!r}, not a string")
    return texts


def _v1_texts(body: dict, limit: int) -> list[str]:
    """The texts of a v1 body ``{"instances": [text, ...]}``."""
    if "instances" not in body:
        raise InvalidInput(
            f'v1 body has no \'instances\' (keys: {sorted(body)[:5]}); send {{"instances": ["text", ...]}}'
        )
    instances = body["instances"]
    if not isinstance(instances, list):
        raise InvalidInput(f"instances is {type(instances).__name__}, not a list of texts")
    return _check_texts(instances, "instances", limit)


def _flatten(data: Any) -> list:
    if not isinstance(data, list):
        return [data]
    return [x for item in data for x in _flatten(item)]


def _v2_texts(request: InferRequest, limit: int) -> list[str]:
    """The texts of a v2 request: its one BYTES input, flat or nested, matching its shape."""
    if len(request.inputs) != 1:
        raise InvalidInput(f"inputs holds {len(request.inputs)} tensors; send one BYTES tensor of texts")
    tensor = request.inputs[0]
    where = f"inputs[0] ({tensor.name!r})"
    if tensor.datatype != "BYTES":
        raise InvalidInput(f"{where} has datatype {tensor.datatype}; send the texts as BYTES")
    if tensor.data is None:  # binary extension: the tensor arrived as raw bytes
        try:
            texts = [t.decode("utf-8") if isinstance(t, bytes) else t for t in tensor.as_numpy().ravel().tolist()]
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidInput(f"{where}: binary data is not UTF-8 texts: {exc}") from None
    else:
        texts = _flatten(tensor.data)
    shape = tensor.shape or []
    if not all(isinstance(d, int) and d >= 0 for d in shape) or math.prod(shape) != len(texts):
        raise InvalidInput(f"{where} has shape {shape} but holds {len(texts)} texts")
    return _check_texts(texts, f"{where}.data", limit)
