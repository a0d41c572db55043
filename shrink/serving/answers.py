"""One loaded model version and the answers it gives: label, score, out of scope.

The model is :func:`shrink.runtime.open_classifier`'s object, the very one the
benchmark times, so what was measured is what serves: the artifact's own
tokenizer and runtime settings, its files verified on load. The label is
``Classifier.predict``'s: the argmax of the logits, or the out-of-scope label
where the artifact's rejection rule (:mod:`shrink.oos`) says so, the very
decision the benchmark measured; the score is the top softmax probability
(the model's confidence, which a max-softmax rule compares with its threshold).

The answer cache lives here too because its key must be exact: two texts share
an entry only when the model cannot tell them apart. The key is the text as the
tokenizer's own normalizer sees it (lower-cased, accents stripped for an
uncased BERT), with runs of spaces collapsed only where the pre-tokenizer
splits on whitespace anyway, plus the model version, so a swap never serves
the old model's answers.
"""

from __future__ import annotations

import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shrink.artifact import ArtifactMeta
from shrink.errors import ShrinkError
from shrink.logs import log

# Pre-tokenizers that split on whitespace and drop it: "a  b" and "a b" give the same tokens.
_WHITESPACE_SPLITTING = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit"}
_SPACES = re.compile(" {2,}")
# Texts a new version answers before it takes traffic: allocates ONNX Runtime's arenas for
# short and long batches, and proves the model answers at all.
WARMUP_TEXTS = ["hello", "what is the balance of my checking account", "play some music " * 8]


@dataclass(frozen=True)
class Answer:
    """What the server says about one text."""

    label: str
    score: float
    out_of_scope: bool


@dataclass(frozen=True)
class ModelVersion:
    """Which model a response came from: the registry version and the content hash of its bytes."""

    version: str
    content_hash: str
    source: str
    candidate: str | None = None


def version_of(directory: str | Path, meta: ArtifactMeta) -> ModelVersion:
    """The version of an artifact directory that was not named by an alias.

    A directory downloaded from the registry (KServe's storage initializer copies
    the whole version prefix to ``/mnt/models``) carries ``model-card.json`` with
    its registry version; any other directory is named by its content hash.
    """
    card = Path(directory) / "model-card.json"
    version, candidate = None, None
    if card.is_file():
        try:
            data = json.loads(card.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = {}
        if data.get("content_hash") == meta.content_hash():
            version, candidate = data.get("version"), data.get("candidate")
    return ModelVersion(
        version=version or f"local-{meta.content_hash()[:12]}",
        content_hash=meta.content_hash(),
        source=str(directory),
        candidate=candidate,
    )


def cache_key_function(classifier) -> Callable[[str], str]:
    """The function that maps a text to its cache key (see the module docstring for why it is exact)."""
    backend = getattr(classifier, "_backend", None)
    if backend is None:  # the HF wrapper: only identical texts are known to tokenize alike
        return lambda text: text
    normalizer = backend.normalizer
    collapse = type(backend.pre_tokenizer).__name__ in _WHITESPACE_SPLITTING
    normalize = normalizer.normalize_str if normalizer is not None else (lambda text: text)
    if not collapse:
        return normalize
    return lambda text: _SPACES.sub(" ", normalize(text)).strip(" ")


class LoadedModel:
    """A verified, warmed model version that turns texts into answers.

    Loading verifies every file against ``shrink.json`` (``open_classifier`` does)
    and runs the warm-up texts, so a version that cannot answer fails here, before
    it takes any traffic.
    """

    def __init__(
        self,
        directory: str | Path,
        version: ModelVersion,
        threads: int | None = 1,
        oos_labels: tuple[str, ...] = ("oos",),
        oos_threshold: float | None = None,
        max_batch_size: int = 32,
        warmup: bool = True,
    ):
        from shrink.runtime import open_classifier

        start = time.perf_counter()
        self.directory = Path(directory)
        self.version = version
        self.classifier = open_classifier(directory, threads=threads)
        self.meta = self.classifier.meta
        if self.meta.content_hash() != version.content_hash:
            raise ShrinkError(
                f"{directory}: content hash {self.meta.content_hash()[:12]} is not the "
                f"{version.content_hash[:12]} of version {version.version}"
            )
        self.labels = list(self.meta.label_names)
        rule = self.classifier.oos_rule
        self.oos_labels = [n for n in self.labels if n in oos_labels or (rule is not None and n == rule.label)]
        self._oos = np.array([name in self.oos_labels for name in self.labels])
        self.oos_threshold = oos_threshold
        self.max_batch_size = max_batch_size
        self.key = cache_key_function(self.classifier)
        if warmup:
            self.warm()
        self.load_seconds = time.perf_counter() - start

    def oos_rule_summary(self) -> dict | None:
        """The artifact's out-of-scope rule for the model's metadata: which score, threshold, label, tuned share."""
        rule = self.classifier.oos_rule
        if rule is None:
            return None
        return {
            "rule": rule.rule,
            "threshold": rule.threshold,
            "label": rule.label,
            "expected_oos_share": rule.expected_oos_share,
        }

    def warm(self) -> None:
        """Answer a batch of one and a full batch once; raise ShrinkError when the model cannot answer."""
        for texts in ([WARMUP_TEXTS[0]], (WARMUP_TEXTS * self.max_batch_size)[: self.max_batch_size]):
            answers = self.answer(texts)
            if len(answers) != len(texts):
                raise ShrinkError(f"{self.directory}: answered {len(answers)} of {len(texts)} warm-up texts")

    def answer(self, texts: list[str]) -> list[Answer]:
        """Answers for ``texts``, run in chunks of ``max_batch_size``, each padded to its longest text."""
        out: list[Answer] = []
        for i in range(0, len(texts), self.max_batch_size):
            chunk = texts[i : i + self.max_batch_size]
            try:
                logits = np.asarray(self.classifier.run(chunk), dtype=np.float32)
            except ShrinkError:
                raise
            except Exception as exc:  # noqa: BLE001 - a runtime's own error types; one line for the log
                raise ShrinkError(
                    f"{self.directory}: the model failed on a batch of {len(chunk)}: "
                    f"{type(exc).__name__}: {exc}".splitlines()[0]
                ) from None
            if logits.shape != (len(chunk), len(self.labels)) or not np.isfinite(logits).all():
                raise ShrinkError(
                    f"{self.directory}: logits of shape {logits.shape} (finite: "
                    f"{bool(np.isfinite(logits).all())}) for {len(chunk)} texts and "
                    f"{len(self.labels)} labels"
                )
            ids = self.classifier.decide(logits)  # the artifact's oos rule, as Classifier.predict applies it
            shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
            scores = (shifted.max(axis=-1) / shifted.sum(axis=-1)).astype(float)
            oos = self._oos[ids]
            if self.oos_threshold is not None:
                oos = oos | (scores < self.oos_threshold)
            out += [
                Answer(self.labels[k], s, bool(o))
                for k, s, o in zip(ids.tolist(), scores.tolist(), oos.tolist(), strict=True)
            ]
        return out


class AnswerCache:
    """A least-recently-used map from (model version, cache key) to an answer, with hit and miss counts.

    Used from the event loop's thread only, so it needs no lock.
    """

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict[tuple[str, str], Answer] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, version: str, key: str) -> Answer | None:
        """The cached answer, freshened, or None (counted either way)."""
        entry = self._entries.get((version, key))
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end((version, key))
        self.hits += 1
        return entry

    def put(self, version: str, key: str, answer: Answer) -> None:
        """Remember an answer, dropping the least recently used beyond ``size``."""
        if self.size <= 0:
            return
        self._entries[(version, key)] = answer
        self._entries.move_to_end((version, key))
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def drop_other_versions(self, version: str) -> None:
        """Forget answers of every other version (they can never be hit again, only take room)."""
        for k in [k for k in self._entries if k[0] != version]:
            del self._entries[k]


def log_loaded(model: LoadedModel) -> None:
    """One log line for a version that is ready to take traffic."""
    log.info(
        "serve: %s ready (%s %s %s, %d labels, content %s) in %.2f s from %s",
        model.version.version,
        model.meta.technique,
        model.meta.format,
        model.meta.precision,
        len(model.labels),
        model.version.content_hash[:12],
        model.load_seconds,
        model.version.source,
    )
