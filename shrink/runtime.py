"""Run any shrink artifact: one interface over PyTorch and ONNX Runtime.

The benchmark, the parity checks and serving all go through
:func:`open_classifier`, so what is measured is exactly what ships: the
artifact's own tokenizer, its recorded runtime settings (threads, graph
optimisation level, execution provider) and its verified files.

Formats with their own loading code (PyTorch INT8, sparse storage) name it in
``shrink.json`` as ``extra.loader = "shrink.<module>:<function>"``; the
function takes ``(directory, meta, threads)`` and returns a torch module.

An artifact may carry an out-of-scope rejection rule (``extra.oos``, see
:mod:`shrink.oos`): :meth:`Classifier.predict` applies it, so every reader of
predictions (the benchmark's accuracy, the gate through it, serving) sees the
same decisions.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from shrink.artifact import META_FILE, ArtifactMeta, read_meta
from shrink.errors import ShrinkError
from shrink.oos import OosRule, apply_rule, rule_of

DEFAULT_MAX_LENGTH = 128


class Classifier:
    """A loaded artifact: tokenize, run, argmax (and its oos rule). Subclasses implement :meth:`logits`."""

    def __init__(
        self,
        directory: str | Path,
        meta: ArtifactMeta,
        max_length: int | None = None,
        input_names: list[str] | None = None,
    ):
        self.directory = Path(directory)
        self.meta = meta
        self._tokenizer = None
        self.max_length = _max_length(self.directory, max_length or meta.settings.get("max_length"))
        self.oos_rule: OosRule | None = rule_of(meta, str(self.directory / META_FILE))
        self._backend, self._fields = (None, {})
        if input_names is not None:  # a graph that names its inputs: no need for transformers (nor torch)
            self._backend, self._fields = _tokenizer_from_files(self.directory, self.max_length, input_names)
        if self._backend is None:
            self._backend, self._fields = _serving_tokenizer(self.tokenizer, self.max_length)

    @property
    def tokenizer(self):
        """The Hugging Face tokenizer, loaded on first use.

        Why lazily: ``transformers`` imports torch (~250 MB of a serving
        worker's memory), and an ONNX model tokenized by the Rust tokenizer
        from its own files needs neither.
        """
        if self._tokenizer is None:
            from shrink.models import load_tokenizer

            self._tokenizer = load_tokenizer(self.directory)
        return self._tokenizer

    @property
    def label_names(self) -> list[str]:
        """Class names in the order of the logits."""
        return self.meta.label_names

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Tokenize with dynamic padding (to the longest text in the batch), as serving does."""
        if self._backend is not None:
            encodings = self._backend.encode_batch(list(texts))
            return {
                name: np.asarray([getattr(e, attr) for e in encodings], dtype=np.int64)
                for name, attr in self._fields.items()
            }
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="np"
        )
        return {k: v.astype(np.int64) for k, v in enc.items()}

    def logits(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        """Raw scores, shape (batch, labels), for already encoded inputs."""
        raise NotImplementedError

    def decide(self, logits: np.ndarray) -> np.ndarray:
        """Label ids for logits: the argmax, or the out-of-scope label where the artifact's rule rejects."""
        return apply_rule(logits, self.oos_rule)

    #: Most texts one model run may take with each text still getting the answer it gets alone
    #: (None: any number). 1 for a graph that derives its quantization from the whole run's input.
    run_batch: int | None = None

    def run(self, texts: list[str]) -> np.ndarray:
        """Raw scores for raw texts: one model run, or runs of ``run_batch``, each padded to its own longest."""
        step = self.run_batch or max(1, len(texts))
        parts = [self.logits(self.encode(texts[i : i + step])) for i in range(0, len(texts), step)]
        if not parts:
            return np.zeros((0, len(self.label_names)), dtype=np.float32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def predict(self, texts: list[str]) -> np.ndarray:
        """Predicted label ids for raw texts (the oos rule applied): what a request costs end to end."""
        return self.decide(self.run(texts))

    def predict_all(self, texts: list[str], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """(predicted ids with the oos rule applied, raw logits) over many texts, in batches."""
        out = [self.run(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
        logits = np.concatenate(out) if out else np.zeros((0, len(self.label_names)), dtype=np.float32)
        return self.decide(logits), logits


# transformers' input names -> the attribute of a ``tokenizers.Encoding`` that holds them.
_ENCODING_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


def _max_length(directory: Path, asked: Any) -> int:
    """The pieces a text is truncated to: the artifact's (or the caller's) ``max_length``, within the position rows.

    Why the check: ``shrink.vocab.trim_positions`` keeps only the rows a student's
    ``max_length`` can index. Past them a longer text would fail in ONNX Runtime's Gather on
    the first long request, in serving; this is one line at load instead. Without a setting
    the default is capped at the model's rows.
    """
    path = directory / "config.json"
    try:
        rows = json.loads(path.read_text(encoding="utf-8")).get("max_position_embeddings")
    except (OSError, ValueError, AttributeError):
        rows = None  # no readable config: the loader that needs one says so
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 1:
        rows = None
    if asked is None:
        return min(DEFAULT_MAX_LENGTH, rows or DEFAULT_MAX_LENGTH)
    if rows is not None and int(asked) > rows:
        raise ShrinkError(f"{path}: max_length {int(asked)} exceeds the model's {rows} position embeddings")
    return int(asked)


def _serving_tokenizer(tokenizer, max_length: int):
    """The Rust tokenizer behind a fast HF tokenizer, set to truncate and pad as ``tokenizer(...)`` would.

    Why not call the HF tokenizer: at batch 1 its Python wrapper (argument
    checks, BatchEncoding, tensor conversion) takes ~0.1 ms a request where the
    Rust tokenizer alone takes ~0.03-0.05 ms (measured here), and the difference
    is ~5% of an INT8 3-layer model's whole latency. The ids, masks and padding
    are the same (identical on all 5,500 CLINC150 test texts at batch 1, 7 and
    64; a test checks a slice); every candidate, teacher included, is served
    through this path. Returns ``(None, {})`` for tokenizers without a Rust
    backend, without a pad token, or with inputs it does not produce: those
    keep the wrapper.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    names = list(getattr(tokenizer, "model_input_names", []))
    if (
        backend is None
        or getattr(tokenizer, "pad_token_id", None) is None
        or not names
        or any(n not in _ENCODING_FIELDS for n in names)
    ):
        return None, {}
    from tokenizers import Tokenizer

    fast = Tokenizer.from_str(backend.to_str())
    fast.enable_truncation(max_length, direction=getattr(tokenizer, "truncation_side", "right"))
    fast.enable_padding(
        direction=getattr(tokenizer, "padding_side", "right"),
        pad_id=tokenizer.pad_token_id,
        pad_type_id=getattr(tokenizer, "pad_token_type_id", 0),
        pad_token=tokenizer.pad_token,
    )
    return fast, {n: _ENCODING_FIELDS[n] for n in names}


def _tokenizer_from_files(directory: Path, max_length: int, input_names: list[str]):
    """The Rust tokenizer read straight from ``tokenizer.json``, set up as :func:`_serving_tokenizer` does.

    The same tokenizer the HF wrapper builds around the same file (its
    ``backend_tokenizer`` serialises identically; a test checks the ids on a
    CLINC150 slice), with the padding and truncation settings taken from
    ``tokenizer_config.json``. ``input_names`` are the inputs the model takes;
    returns ``(None, {})`` when a file or setting is missing, or an input is one
    a ``tokenizers.Encoding`` does not hold: the caller then uses the wrapper.
    """
    import json

    from tokenizers import Tokenizer

    files = (directory / "tokenizer.json", directory / "tokenizer_config.json")
    if not all(f.is_file() for f in files) or any(n not in _ENCODING_FIELDS for n in input_names):
        return None, {}
    try:
        config = json.loads(files[1].read_text())
        fast = Tokenizer.from_file(str(files[0]))
    except Exception:  # noqa: BLE001 - an unreadable file: the HF wrapper will say what is wrong
        return None, {}
    pad = config.get("pad_token")
    pad = pad.get("content") if isinstance(pad, dict) else pad
    pad_id = fast.token_to_id(pad) if isinstance(pad, str) else None
    if pad_id is None:
        return None, {}
    fast.enable_truncation(max_length, direction=config.get("truncation_side", "right"))
    fast.enable_padding(
        direction=config.get("padding_side", "right"),
        pad_id=pad_id,
        pad_type_id=int(config.get("pad_token_type_id", 0)),
        pad_token=pad,
    )
    return fast, {n: _ENCODING_FIELDS[n] for n in input_names}


class TorchClassifier(Classifier):
    """A PyTorch module behind the common interface (FP32, INT8 or densified sparse)."""

    def __init__(self, directory, meta, module, max_length=None):
        super().__init__(directory, meta, max_length)
        self.module = module.eval()

    def logits(self, encoded):
        """Run the PyTorch module without autograd."""
        import torch

        with torch.inference_mode():
            inputs = {k: torch.from_numpy(v) for k, v in encoded.items()}
            return self.module(**inputs).logits.float().numpy()


# Ops that quantize activations with a scale computed over the whole input of a run (ORT dynamic INT8).
BATCH_DEPENDENT_OPS = ("DynamicQuantizeLinear", "DynamicQuantizeMatMul")


class OrtClassifier(Classifier):
    """An ONNX model in an ONNX Runtime session built from the artifact's runtime settings.

    A graph with ORT's dynamic INT8 ops (``extra.quantized_ops`` names them) runs
    one text per run. Why: ``DynamicQuantizeLinear`` takes one scale over the
    whole input tensor, so a text's logits depend on the texts batched with it and
    on their padding (the demo's model: 71 of the 5,500 CLINC150 test labels
    change between batches of up to 8 and one text at a time). Run alone, every
    text gets one answer wherever it is asked: the benchmark's accuracy, the gate
    and the server agree. The cost is the batching gain, ~10% for that model.
    """

    def __init__(self, directory, meta, threads: int | None = None, max_length=None):
        import onnxruntime as ort

        self.directory = Path(directory)
        runtime = dict(meta.runtime)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or runtime.get("intra_op_threads", 1))
        opts.inter_op_num_threads = int(runtime.get("inter_op_threads", 1))
        level = runtime.get("graph_optimization_level", "all")
        opts.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[level]
        provider = runtime.get("execution_provider", "CPUExecutionProvider")
        if provider not in ort.get_available_providers():
            raise ShrinkError(f"{directory}: execution provider {provider} is not available here")
        model_path = self.directory / meta.extra.get("model_file", "model.onnx")
        try:
            self.session = ort.InferenceSession(str(model_path), opts, providers=[provider])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise ShrinkError(f"{model_path}: ONNX Runtime cannot load it: {exc}".splitlines()[0]) from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        quantized_ops = meta.extra.get("quantized_ops") or {}
        if any(op in quantized_ops for op in BATCH_DEPENDENT_OPS):
            self.run_batch = 1
        super().__init__(directory, meta, max_length, input_names=self.input_names)

    def logits(self, encoded):
        """Run the session; inputs the graph does not take (e.g. token_type_ids) are dropped."""
        feeds = {k: v for k, v in encoded.items() if k in self.input_names}
        return self.session.run(None, feeds)[0]


def _custom_loader(spec: str, where: str):
    module_name, _, func = spec.partition(":")
    if not module_name.startswith("shrink.") or not func:
        raise ShrinkError(f"{where}: loader {spec!r} must be 'shrink.<module>:<function>'")
    return getattr(importlib.import_module(module_name), func)


def open_classifier(directory: str | Path, threads: int | None = None, **kwargs: Any) -> Classifier:
    """Load an artifact (hashes verified) behind the common interface.

    ``threads`` overrides the recorded intra-op thread count (the benchmark sets it
    from its own config so every candidate is measured alike).
    """
    meta = read_meta(directory)
    if meta.format == "onnx":
        return OrtClassifier(directory, meta, threads=threads, **kwargs)
    if meta.format == "pytorch":
        import torch

        if threads:
            torch.set_num_threads(threads)
        loader = meta.extra.get("loader")
        if loader:
            from shrink.models import weights_errors

            load = _custom_loader(loader, str(Path(directory) / "shrink.json"))
            with weights_errors(directory):
                module = load(Path(directory), meta, threads)
        else:
            from shrink.models import load_classifier

            module = load_classifier(directory)
        return TorchClassifier(directory, meta, module, **kwargs)
    raise ShrinkError(f"{directory}: unknown model format {meta.format!r}")
