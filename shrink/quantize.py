"""INT8 quantization: PyTorch dynamic, ONNX Runtime dynamic and ONNX Runtime static (QDQ).

Why the model shrinks by different factors: a BERT-class classifier is mostly
two things, the Linear (MatMul) weights of the encoder and the word-embedding
table (30522 x hidden: half of MiniLM-L6's parameters, a fifth of BERT-base's).
Stock ``torch.ao.quantization.quantize_dynamic`` quantizes only ``nn.Linear``,
so the embeddings stay FP32: BERT-base drops to ~2/5 of its size, MiniLM-L6 to
~2/3 (measured: 91.1 -> 59.3 MB). ONNX Runtime's dynamic quantizer also
quantizes the embedding ``Gather`` (``op_types_to_quantize`` includes "Gather",
or "EmbedLayerNormalization" in a fused graph), so nearly every weight becomes
one byte and the file drops to ~1/4 (91.1 -> 23.8 MB). The PyTorch path here
quantizes the embeddings too when ``quantize_embeddings`` is set (91.1 -> 23.7
MB), so the variants are compared on speed and accuracy, not on a storage
accident.

Measured with bench/quantize.py on MiniLM-L6 fine-tuned on CLINC150 (151
classes, full test split of 5,500 texts; FP32 accuracy 86.40%; batch-1 p50 on
one thread of a shared 2-core AMD EPYC, PyTorch FP32 11.7 ms):

    variant                                   smaller  accuracy  agreement  p50 ms
    PyTorch INT8 (this module, + embeddings)    3.84x    86.62%     99.11%     6.3
    ORT dynamic, MatMulInteger, per-tensor      3.87x    85.64%     96.18%     2.3
    ORT dynamic, MatMulInteger, per-channel     3.85x    86.56%     98.20%     2.8
    ORT dynamic, MatMulNBits (the default)      3.83x    86.53%     99.35%     2.7
    ORT static QDQ (minmax), plain export       3.82x    86.33%     95.25%     3.2

ORT figures are for the optimized (fused) graph unless noted; p50 is one
request end to end (tokenize + run), 300 requests, so +-0.3 ms.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from shrink.artifact import ArtifactMeta, read_meta, write_artifact
from shrink.config import QuantizeConfig, save_yaml
from shrink.errors import ShrinkError
from shrink.logs import log, progress
from shrink.onnx_export import (
    CONFIG_FILE,
    EXTERNAL_DATA_BYTES,
    MODEL_FILE,
    PARITY_FILE,
    copy_companions,
    inherited_settings,
    load_onnx_graph,
    measure_against_parity,
    open_onnx_source,
    quantized_ops,
    require_classifier,
    runtime_settings,
    weights_bytes,
)

TORCH_INT8_FILE = "model-int8.safetensors"
TORCH_LOADER = "shrink.quantize:load_torch_int8"
# Below this agreement with FP32 an INT8 model is recorded with a warning (the gate decides, not this step).
AGREEMENT_WARNING = 0.99


def _keep_fp32(name: str, patterns: list[str]) -> bool:
    return any(p and p in name for p in patterns)


# --------------------------------------------------------------------------- PyTorch INT8


def _int8_modules():
    """The INT8 module classes, built lazily so importing this file does not import torch."""
    import torch
    from torch import nn

    class Int8Linear(nn.Module):
        """Linear with int8 weights (per output channel, symmetric) and int8 activations (per token).

        The same scheme as torchao's ``Int8DynamicActivationInt8WeightConfig``,
        computed with ``torch._int_mm`` (int8 x int8 -> int32, a core ATen kernel).
        Weights are plain int8 / float32 buffers, so they save as safetensors.
        """

        def __init__(self, in_features: int, out_features: int, bias: bool):
            super().__init__()
            self.in_features, self.out_features = in_features, out_features
            self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
            self.register_buffer("weight_scale", torch.ones(out_features))
            self.register_buffer("bias", torch.zeros(out_features) if bias else None)
            self._cache: tuple[tuple[int, int], torch.Tensor] | None = None

        @classmethod
        def from_float(cls, linear: nn.Linear) -> Int8Linear:
            weight = linear.weight.detach().float()
            scale = weight.abs().amax(dim=1).clamp_min(1e-12) / 127.0
            q = cls(linear.in_features, linear.out_features, linear.bias is not None)
            q.weight_int8.copy_(torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8))
            q.weight_scale.copy_(scale)
            if linear.bias is not None:
                q.bias.copy_(linear.bias.detach().float())
            return q

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            key = (self.weight_int8.data_ptr(), self.weight_int8._version)
            if self._cache is None or self._cache[0] != key:  # rebuilt after a load_state_dict
                self._cache = (key, self.weight_int8.t().contiguous())  # [in, out]: what _int_mm reads fastest
            shape = x.shape
            x2 = x.reshape(-1, self.in_features).float()
            x_scale = x2.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
            xq = torch.round(x2 / x_scale).to(torch.int8)
            y = torch._int_mm(xq, self._cache[1]).float() * x_scale * self.weight_scale
            if self.bias is not None:
                y = y + self.bias
            return y.reshape(*shape[:-1], self.out_features)

    class Int8Embedding(nn.Module):
        """Embedding table stored as int8 rows with one float scale per row; rows are dequantized on lookup."""

        def __init__(self, num_embeddings: int, embedding_dim: int):
            super().__init__()
            self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
            self.register_buffer("weight_int8", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8))
            self.register_buffer("weight_scale", torch.ones(num_embeddings))

        @classmethod
        def from_float(cls, emb: nn.Embedding) -> Int8Embedding:
            weight = emb.weight.detach().float()
            scale = weight.abs().amax(dim=1).clamp_min(1e-12) / 127.0
            q = cls(emb.num_embeddings, emb.embedding_dim)
            q.weight_int8.copy_(torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8))
            q.weight_scale.copy_(scale)
            return q

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.weight_int8[ids].float() * self.weight_scale[ids].unsqueeze(-1)

    return Int8Linear, Int8Embedding


def _replace(model, name: str, module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _int8_plan(model, cfg: QuantizeConfig) -> dict[str, list[str]]:
    """Which modules become INT8: every Linear and (optionally) Embedding not matched by ``keep_fp32``."""
    from torch import nn

    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not _keep_fp32(n, cfg.keep_fp32)]
    embedding = []
    if cfg.quantize_embeddings:
        embedding = [
            n for n, m in model.named_modules() if isinstance(m, nn.Embedding) and not _keep_fp32(n, cfg.keep_fp32)
        ]
    return {"linear": linear, "embedding": embedding}


def _apply_plan(model, plan: dict[str, list[str]], convert: bool):
    """Swap planned modules for INT8 ones: converted from float weights, or empty shells to load into."""
    int8_linear, int8_embedding = _int8_modules()
    for name in plan["linear"]:
        lin = model.get_submodule(name)
        _replace(
            model,
            name,
            int8_linear.from_float(lin)
            if convert
            else int8_linear(lin.in_features, lin.out_features, lin.bias is not None),
        )
    for name in plan["embedding"]:
        emb = model.get_submodule(name)
        _replace(
            model,
            name,
            int8_embedding.from_float(emb) if convert else int8_embedding(emb.num_embeddings, emb.embedding_dim),
        )
    return model


def quantize_torch_dynamic(
    model_dir: str | Path, out_dir: str | Path, cfg: QuantizeConfig, parent_uri: str | None = None
) -> ArtifactMeta:
    """Dynamic INT8 of a PyTorch classifier artifact, saved as safetensors (no pickle).

    Why not ``torch.ao.quantization.quantize_dynamic``: torch 2.13 marks it
    deprecated ("will be removed"), its modules keep weights in packed
    ``ScriptObject``s that only pickle can save, and the quantized tensor
    dtypes it builds on are deprecated too (pytorch issue 184982). Why not
    torchao (0.18 on PyPI): it works on CPU but its ``Int8Tensor`` path was
    measured slower than FP32 in eager mode here (1.98 ms vs 1.39 ms for a
    384->1536->384 MLP at batch 1, one thread), gaining speed only under
    ``torch.compile``, and it adds a dependency whose wheel ships CUDA
    libraries. So the weights are stored in the library-neutral form both use
    (int8 per-channel weights + float scales) and run with ``torch._int_mm``,
    a core ATen kernel (~2x faster than FP32 on that MLP; a whole MiniLM-L6
    batch-1 request 6.3 ms against 11.7 ms, agreement 99.1%): the file format
    outlives any quantization API, and :func:`load_torch_int8` can switch kernels
    without re-quantizing. Per-channel weights cost nothing here, so they are
    always used (``cfg.per_channel`` applies to ONNX Runtime).
    """
    import torch
    from safetensors.torch import save_file

    from shrink.onnx_export import load_torch_source

    model, tokenizer, meta = load_torch_source(model_dir)
    plan = _int8_plan(model, cfg)
    if not plan["linear"]:
        raise ShrinkError(f"{model_dir}: no Linear layers to quantize (keep_fp32 {cfg.keep_fp32} matches all)")
    log.info(
        "PyTorch INT8: %d Linear, %d Embedding modules (kept FP32: names containing %s)",
        len(plan["linear"]),
        len(plan["embedding"]),
        cfg.keep_fp32,
    )
    with torch.no_grad():
        _apply_plan(model, plan, convert=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / TORCH_INT8_FILE), metadata={"format": "pt", "shrink": "int8-dynamic"})
    model.config.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    save_yaml(cfg, out / CONFIG_FILE)
    common = dict(
        format="pytorch",
        precision="int8",
        label_names=meta.label_names,
        technique="torch-dynamic-int8",
        settings={
            **inherited_settings(meta),
            "weights": "int8 per-channel symmetric",
            "activations": "int8 per-token symmetric, dynamic",
            "quantize_embeddings": cfg.quantize_embeddings,
            "keep_fp32": cfg.keep_fp32,
        },
        parent=meta,
        parent_uri=parent_uri,
        extra={
            "loader": TORCH_LOADER,
            "weights_file": TORCH_INT8_FILE,
            "kernel": "torch._int_mm",
            "int8_modules": plan,
        },
    )
    sealed = write_artifact(out, **common)
    size, parent_size = weights_bytes(out, sealed), weights_bytes(model_dir, meta)
    metrics = {"size_mb": size / 1e6, "compression": parent_size / size if size else 0.0}
    return write_artifact(out, **common, metrics=metrics)


def load_torch_int8(directory: Path, meta: ArtifactMeta, threads: int | None):
    """Rebuild the INT8 classifier from config.json and the safetensors file (the artifact's ``extra.loader``)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForSequenceClassification

    del threads  # the runtime already set torch's thread count
    directory = Path(directory)
    require_classifier(directory)
    plan = meta.extra.get("int8_modules") or {}
    weights = directory / meta.extra.get("weights_file", TORCH_INT8_FILE)
    config = AutoConfig.from_pretrained(str(directory))
    model = AutoModelForSequenceClassification.from_config(config)
    try:
        _apply_plan(model, {"linear": plan.get("linear", []), "embedding": plan.get("embedding", [])}, convert=False)
    except AttributeError as exc:
        raise ShrinkError(f"{directory / 'shrink.json'}: int8_modules names a module the model lacks: {exc}") from None
    result = model.load_state_dict(load_file(str(weights)), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ShrinkError(
            f"{weights}: does not match the model in config.json "
            f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})"
        )
    return model.eval()


# --------------------------------------------------------------------------- ONNX Runtime INT8


def _large(path: Path) -> bool:
    """Whether a model is near protobuf's 2 GiB limit, so its weights must live in external data."""
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) > EXTERNAL_DATA_BYTES


def _preprocess(path: Path, tmp: str) -> tuple[Path, Any]:
    """ORT's recommended pre-quantization pass: symbolic shape inference plus basic graph cleanup.

    Without it the quantizer cannot type the outputs of fused contrib ops
    (Attention, SkipLayerNormalization ...) and silently skips every tensor
    after them: a static QDQ model of a fused graph then quantizes ~10% of its
    MatMuls instead of all of them.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    target = Path(tmp) / MODEL_FILE
    try:
        quant_pre_process(
            str(path),
            str(target),
            auto_merge=True,
            save_as_external_data=_large(path),
            all_tensors_to_one_file=True,
            external_data_location=MODEL_FILE + ".data",
        )
    except Exception as exc:  # noqa: BLE001 - shape inference raises many types
        raise ShrinkError(f"{path}: shape inference before quantization failed: {exc}".splitlines()[0]) from None
    return target, load_onnx_graph(target)


def _excluded_nodes(model, patterns: list[str]) -> list[str]:
    """ONNX node names matching ``keep_fp32`` (exported names carry the module path, e.g. /classifier/Gemm).

    The dynamic quantizer rewrites a Gemm into ``<name>_MatMul`` + ``<name>_Add`` before it
    quantizes, so a kept Gemm is excluded under its new name too.
    """
    names = []
    for node in model.graph.node:
        if _keep_fp32(node.name, patterns):
            names.append(node.name)
            if node.op_type == "Gemm":
                names.append(node.name + "_MatMul")
    return names


def _finish_int8(
    out: Path,
    model_dir: Path,
    meta: ArtifactMeta,
    cfg: QuantizeConfig,
    technique: str,
    settings: dict[str, Any],
    parent_uri: str | None,
) -> ArtifactMeta:
    """Seal an INT8 ONNX artifact, then record its size, ops and agreement with the FP32 reference."""
    copy_companions(model_dir, out)
    save_yaml(cfg, out / CONFIG_FILE)
    ops = quantized_ops(load_onnx_graph(out / MODEL_FILE))
    if not ops:
        raise ShrinkError(
            f"{model_dir / MODEL_FILE}: the quantizer found nothing to quantize "
            f"(no MatMul/Gather weights outside keep_fp32 {cfg.keep_fp32})"
        )
    common = dict(
        format="onnx",
        precision="int8",
        label_names=meta.label_names,
        technique=technique,
        settings={**inherited_settings(meta), **settings},
        parent=meta,
        parent_uri=parent_uri,
        runtime=runtime_settings(cfg.runtime),
        extra={
            "model_file": MODEL_FILE,
            "quantized_ops": ops,
            **({"reference": PARITY_FILE} if (out / PARITY_FILE).is_file() else {}),
        },
    )
    sealed = write_artifact(out, **common)
    size, parent_size = weights_bytes(out, sealed), weights_bytes(model_dir, meta)
    metrics: dict[str, Any] = {"size_mb": size / 1e6, "compression": parent_size / size if size else 0.0}
    parity = measure_against_parity(out)
    warnings = []
    if parity is not None:
        metrics |= {
            "agreement_with_fp32": parity["agreement"],
            "max_abs_logit_diff": parity["max_abs_diff"],
            "agreement_examples": parity["examples"],
        }
        log.info(
            "%s: %.2f MB (%.2fx smaller), agreement with FP32 %.2f%% on %d texts",
            technique,
            size / 1e6,
            metrics["compression"],
            100 * parity["agreement"],
            parity["examples"],
        )
        if parity["agreement"] < AGREEMENT_WARNING:
            warnings.append(f"agreement with FP32 {parity['agreement']:.2%} < {AGREEMENT_WARNING:.0%}")
            log.warning("%s: %s", out, warnings[-1])
    common["extra"]["warnings"] = warnings
    return write_artifact(out, **common, metrics=metrics)


# MatMulNBits' compute type: 4 = int8 (activations quantized per block at run time), the fast path on CPUs.
NBITS_ACCURACY_LEVEL = 4


def _nbits_matmuls(source: Path, target: Path, cfg: QuantizeConfig, exclude: list[str]) -> int:
    """Rewrite constant-weight MatMuls as MatMulNBits (8-bit, symmetric, ``block_size`` blocks, int8 compute)."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    algo = DefaultWeightOnlyQuantConfig(
        block_size=cfg.block_size, is_symmetric=True, accuracy_level=NBITS_ACCURACY_LEVEL, bits=8
    )
    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(source)),
        bits=8,
        block_size=cfg.block_size,
        is_symmetric=True,
        accuracy_level=NBITS_ACCURACY_LEVEL,
        nodes_to_exclude=exclude,
        algo_config=algo,
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(target), use_external_data_format=_large(source))
    return sum(n.op_type == "MatMulNBits" for n in quantizer.model.model.graph.node)


def quantize_ort_dynamic(
    model_dir: str | Path, out_dir: str | Path, cfg: QuantizeConfig, parent_uri: str | None = None
) -> ArtifactMeta:
    """ONNX Runtime dynamic INT8: weights quantized offline, activations at run time.

    ``onnxruntime.quantization.quantize_dynamic`` quantizes Attention (-> QAttention)
    in a fused graph and, with ``quantize_embeddings``, the word-embedding Gather /
    EmbedLayerNormalization (-> QEmbedLayerNormalization), which is what takes the
    file to ~1/4 (see the module docstring). Nodes named by ``keep_fp32`` (the
    pooler and classifier by default) stay FP32.

    The other MatMuls (attention output, both FFN layers) depend on ``matmul_kernel``:

    - ``integer``: ``quantize_dynamic`` too (MatMulInteger, fused by ORT into
      DynamicQuantizeMatMul). Its activations get ONE scale per tensor, per call.
      Measured on MiniLM-L6 fine-tuned on CLINC150 (full test, 5,500 texts,
      bench/quantize.py): per-tensor weights lose 0.8 accuracy point (agreement
      with FP32 96.2%); per-channel weights win the accuracy back (+0.2 point) but
      agreement stays at 98.2%. Keeping any one block type or any one layer in FP32
      moves it by at most 0.6 point: the error is the activations' single scale,
      spread over every layer.
    - ``nbits`` (default): MatMulNBits with 8-bit symmetric weights in blocks of
      ``block_size`` along the input dimension and ``accuracy_level`` 4, i.e. int8
      compute with activations quantized per block at run time. Same model:
      agreement 99.35%, accuracy +0.1 point, and faster (1.9 vs 2.1 ms batch-1
      model time, one thread) at the same 3.8x smaller file.

    Which graph to give it: the optimized (fused) one; the fused Attention becomes
    one QAttention kernel, where the plain export keeps separate Q, K, V MatMuls
    that ORT can no longer fuse once they are quantized (MatMulNBits on the plain
    export: 3.5 ms). ``reduce_range`` (7-bit weights) only matters on x86 CPUs
    without VNNI, whose u8 x s8 instructions can saturate.
    """
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    model_dir = Path(model_dir)
    meta, path, _ = open_onnx_source(model_dir, "ORT dynamic INT8")
    op_types = ["Attention"] + (["MatMul"] if cfg.matmul_kernel == "integer" else [])
    op_types += ["Gather", "EmbedLayerNormalization"] if cfg.quantize_embeddings else []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepared, model = _preprocess(path, tmp)
        exclude = _excluded_nodes(model, cfg.keep_fp32)
        log.info(
            "ORT dynamic INT8 of %s: %s MatMuls, quantize_dynamic ops %s, per_channel=%s, %d nodes kept FP32",
            path,
            cfg.matmul_kernel,
            op_types,
            cfg.per_channel,
            len(exclude),
        )
        try:
            if cfg.matmul_kernel == "nbits":
                nbits = Path(tmp) / "nbits.onnx"
                count = _nbits_matmuls(prepared, nbits, cfg, exclude)
                log.info("%d MatMuls -> MatMulNBits (8-bit, block %d)", count, cfg.block_size)
                prepared = nbits
            ort_quantize_dynamic(
                str(prepared),
                str(out / MODEL_FILE),
                op_types_to_quantize=op_types,
                per_channel=cfg.per_channel,
                reduce_range=cfg.reduce_range,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=exclude,
                use_external_data_format=_large(path),
                extra_options={"MatMulConstBOnly": True, "DefaultTensorType": TensorProto.FLOAT},
            )
        except (ValueError, RuntimeError, KeyError) as exc:
            raise ShrinkError(f"{path}: ORT dynamic quantization failed: {exc}".splitlines()[0]) from None
    settings = {
        "matmul_kernel": cfg.matmul_kernel,
        "op_types": op_types,
        "per_channel": cfg.per_channel,
        "reduce_range": cfg.reduce_range,
        "weight_type": "int8",
        "keep_fp32": cfg.keep_fp32,
        "source_technique": meta.technique,
    }
    if cfg.matmul_kernel == "nbits":
        settings |= {"block_size": cfg.block_size, "accuracy_level": NBITS_ACCURACY_LEVEL}
    return _finish_int8(out, model_dir, meta, cfg, "ort-dynamic-int8", settings, parent_uri)


# --------------------------------------------------------------------------- static (calibrated)


def calibration_texts(dataset_dir: str | Path, n: int, seed: int = 0) -> list[str]:
    """A fixed random sample of training texts: calibration must see the inputs the model will get."""
    from shrink.data import load_prepared

    dd, _ = load_prepared(dataset_dir)
    texts = list(dd["train"]["text"])
    if not texts:
        raise ShrinkError(f"{dataset_dir}: the train split is empty; nothing to calibrate on")
    return random.Random(seed).sample(texts, min(n, len(texts)))


class TextCalibrationReader:
    """Feeds tokenized batches to ORT's calibrator (a ``CalibrationDataReader``, duck-typed).

    For minmax, batches are padded like serving pads them (to their longest
    text), so ranges include what padding does. ORT's histogram calibrators
    (entropy, percentile) stack every batch's activations into one array per
    tensor, so for them every batch has the same shape: ``max_length`` tokens and
    ``batch_size`` texts (the last batch is filled up with texts from the start).
    Every calibrator holds all calibrated activations in memory until the end,
    which fixed-length padding makes much larger (MiniLM-L6: minmax on 256
    dynamically padded texts peaks at 1.2 GB, percentile on 64 texts of 128
    tokens at 3.4 GB), so keep ``calibration_samples`` small for histograms.
    """

    def __init__(
        self,
        texts: list[str],
        tokenizer,
        input_names: list[str],
        max_length: int,
        batch_size: int = 16,
        fixed_shape: bool = False,
    ):
        if fixed_shape and len(texts) % batch_size:
            texts = texts + (texts * batch_size)[: batch_size - len(texts) % batch_size]
        self._batches = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
        self._iter = iter(progress(self._batches, desc="calibration"))
        self._tokenizer, self._names, self._max_length = tokenizer, input_names, max_length
        self._padding = "max_length" if fixed_shape else True

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._iter, None)
        if batch is None:
            return None
        enc = self._tokenizer(
            batch, padding=self._padding, truncation=True, max_length=self._max_length, return_tensors="np"
        )
        return {k: np.asarray(v, dtype=np.int64) for k, v in enc.items() if k in self._names}

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def quantize_ort_static(
    model_dir: str | Path,
    out_dir: str | Path,
    cfg: QuantizeConfig,
    texts: list[str],
    parent_uri: str | None = None,
) -> ArtifactMeta:
    """ONNX Runtime static INT8 in QDQ format, activation ranges calibrated on ``texts``.

    Weights are int8 (symmetric), activations uint8 (asymmetric): the CPU
    recommendation for x86 in ORT's documentation. Only MatMuls with a constant
    weight are quantized (``MatMulConstBOnly``): the attention-score MatMuls
    multiply two activations whose ranges change with every input, which
    calibration cannot capture without a large accuracy loss. With
    ``quantize_embeddings`` the embedding Gathers are quantized too. Ops a fused
    graph holds (Attention, EmbedLayerNormalization) have no QDQ form, so on the
    optimized model their weights stay FP32; give this step the plain export for
    the smallest file.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    from shrink.models import load_tokenizer
    from shrink.runtime import DEFAULT_MAX_LENGTH

    model_dir = Path(model_dir)
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise ShrinkError(f"{model_dir}: no calibration texts; static quantization needs a sample of inputs")
    meta, path, _ = open_onnx_source(model_dir, "ORT static INT8")
    max_length = int(meta.settings.get("max_length", DEFAULT_MAX_LENGTH))
    op_types = ["MatMul"] + (["Gather"] if cfg.quantize_embeddings else [])
    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[cfg.calibration_method]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepared, model = _preprocess(path, tmp)
        input_names = [i.name for i in model.graph.input]
        if cfg.calibration_method != "minmax" and len(texts) > 128:
            log.warning(
                "%s calibration keeps every activation of all %d texts in memory (~50 MB per text for "
                "MiniLM-L6 at 128 tokens); lower quantize.calibration_samples if this step runs out of "
                "memory",
                cfg.calibration_method,
                len(texts),
            )
        reader = TextCalibrationReader(
            texts, load_tokenizer(model_dir), input_names, max_length, fixed_shape=cfg.calibration_method != "minmax"
        )
        exclude = _excluded_nodes(model, cfg.keep_fp32)
        log.info(
            "ORT static INT8 (QDQ) of %s: %d calibration texts, %s calibration, ops %s",
            path,
            len(texts),
            cfg.calibration_method,
            op_types,
        )
        try:
            ort_quantize_static(
                str(prepared),
                str(out / MODEL_FILE),
                reader,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=op_types,
                per_channel=cfg.per_channel,
                reduce_range=cfg.reduce_range,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=exclude,
                calibrate_method=method,
                use_external_data_format=_large(path),
                extra_options={"MatMulConstBOnly": True},
            )
        except (ValueError, RuntimeError, KeyError) as exc:
            raise ShrinkError(f"{path}: ORT static quantization failed: {exc}".splitlines()[0]) from None
    settings = {
        "format": "QDQ",
        "op_types": op_types,
        "per_channel": cfg.per_channel,
        "reduce_range": cfg.reduce_range,
        "activation_type": "uint8",
        "weight_type": "int8",
        "calibration_method": cfg.calibration_method,
        "calibration_samples": len(texts),
        "keep_fp32": cfg.keep_fp32,
        "source_technique": meta.technique,
    }
    return _finish_int8(out, model_dir, meta, cfg, "ort-static-int8", settings, parent_uri)


def is_int8(model_dir: str | Path) -> bool:
    """True when an artifact is already INT8 (by its metadata or, for ONNX, by its operators)."""
    meta = read_meta(model_dir)
    if meta.precision == "int8":
        return True
    if meta.format == "onnx":
        return bool(quantized_ops(load_onnx_graph(Path(model_dir) / meta.extra.get("model_file", MODEL_FILE))))
    return False


__all__ = [
    "TORCH_INT8_FILE",
    "calibration_texts",
    "is_int8",
    "load_torch_int8",
    "quantize_ort_dynamic",
    "quantize_ort_static",
    "quantize_torch_dynamic",
]
