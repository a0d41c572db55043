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

The demo's distilled student (3 of those layers, FP32 accuracy 86.27%) ranks the
kernels differently, which is why ORT dynamic INT8 measures its variants on each
model instead of fixing one (:func:`quantize_ort_dynamic`). bench/quantize.py,
full test split at batch 64 (accuracy, agreement); p50: the step's own timing
(batch 1, one thread, interleaved, same process):

    ORT dynamic, fused graph                   accuracy  agreement  p50 ms   +split LN
    MatMulInteger, per-tensor                    86.45%     97.71%   0.453      0.350
    MatMulInteger, per-channel (the winner)      86.42%     98.33%   0.466      0.379
    MatMulNBits (the former default)             86.35%     99.16%   0.640      0.569
    ORT static QDQ, plain export                 86.42%     97.73%   0.555      0.458

"split LN" is :func:`split_layernorm`, the same model with its residual
LayerNorms written so that ORT 1.32 does not run them as SkipLayerNormalization.
Side by side with optimum-onnx's and Olive's INT8 of the same student see
bench/peers.py and docs/quantization.md.
"""

from __future__ import annotations

import functools
import random
import shutil
import tempfile
from dataclasses import dataclass
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
    read_parity,
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


@functools.cache
def int8_matmul_kernel() -> str:
    """How :class:`Int8Linear` multiplies on this CPU: ``int_mm`` (``torch._int_mm``) or ``float``.

    ``torch._int_mm`` takes a slow path on x86 CPUs without VNNI or AMX: on a 2.0 GHz AMD
    EPYC with AVX2 only, 95.8% of the demo's PyTorch INT8 student's time went to it (3.7 ms
    for one 16 x 384 @ 384 x 1536 product, where an FP32 ``nn.Linear`` of that shape takes
    1.5 ms), and a request took 72 ms against the FP32 student's 9.3. There ``float``
    multiplies the same int8 values with the FP32 GEMM: products of int8 values are exact in
    float32 and so are their sums while they stay below 2^24 in magnitude, which a dot product
    of ``in_features`` <= 1,040 terms always does (a longer one only when nearly every term
    is near 127 x 127, and then off by one unit in 2^24). Same weights, same activation
    scales, the same answers to within that; FP32 speed, INT8 size. ``SHRINK_TORCH_INT8_KERNEL``
    (``int_mm`` or ``float``) overrides the choice.
    """
    import os

    forced = os.environ.get("SHRINK_TORCH_INT8_KERNEL", "").strip()
    if forced:
        if forced not in ("int_mm", "float"):
            raise ShrinkError(f"SHRINK_TORCH_INT8_KERNEL: {forced!r} is not int_mm or float")
        return forced
    from shrink.hardware import x86_without_int8_dot

    return "float" if x86_without_int8_dot() else "int_mm"


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
            kernel = "int_mm" if x.is_cuda else int8_matmul_kernel()
            key = (self.weight_int8.data_ptr(), self.weight_int8._version, kernel)
            if self._cache is None or self._cache[0] != key:  # rebuilt after a load_state_dict
                weight = self.weight_int8.t().contiguous()  # [in, out]: what _int_mm reads fastest
                self._cache = (key, weight if kernel == "int_mm" else weight.float())
            shape = x.shape
            x2 = x.reshape(-1, self.in_features).float()
            x_scale = x2.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
            xq = torch.round(x2 / x_scale).to(torch.int8)
            if kernel == "int_mm":
                acc = torch._int_mm(xq, self._cache[1]).float()
            else:  # the same int8 products and sums in FP32 (int8_matmul_kernel says when that is exact)
                acc = xq.float() @ self._cache[1]
            y = acc * x_scale * self.weight_scale
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
    outlives any quantization API, and the kernel can change without re-quantizing
    (on x86 CPUs without VNNI it does: :func:`int8_matmul_kernel`). Per-channel weights cost nothing here, so they are
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
    if int8_matmul_kernel() == "float":
        log.info("%s: torch._int_mm is slow on this CPU (no VNNI/AMX): int8 products in FP32", directory)
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
    extra: dict[str, Any] | None = None,
    extra_metrics: dict[str, Any] | None = None,
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
            **(extra or {}),
        },
    )
    sealed = write_artifact(out, **common)
    size, parent_size = weights_bytes(out, sealed), weights_bytes(model_dir, meta)
    metrics: dict[str, Any] = {"size_mb": size / 1e6, "compression": parent_size / size if size else 0.0}
    metrics |= extra_metrics or {}
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
# Ops only the ORT transformers optimizer writes: a graph holding one is the fused graph.
_FUSED_OPS = frozenset({"Attention", "SkipLayerNormalization", "EmbedLayerNormalization", "BiasGelu"})
# The kernel a search falls back to when there is no FP32 reference to judge accuracy by: the most
# accurate on the models measured (MiniLM-L6: agreement 99.35% against 98.2% / 96.2% for MatMulInteger).
_SAFEST_KERNEL = "nbits"


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


def split_layernorm(model) -> int:
    """Rewrite every residual-add LayerNorm as ``Sum`` + ``LayerNormalization``, in place; returns how many.

    Why: ONNX Runtime 1.32's CPU ``SkipLayerNormalization`` kernel is a scalar loop
    (float reduction, a division per element, so the compiler cannot vectorize it):
    on a [1, 14, 384] MiniLM activation it takes 23.6 us where ``Sum`` +
    ``LayerNormalization`` take 3.8 us (measured here, one thread), and the 3-layer
    student runs six of them per request: ~0.1 ms of a 0.4 ms INT8 request. ORT's
    own load-time fusion (``SkipLayerNormFusion``) turns ``Add`` + ``LayerNormalization``
    back into the slow op, but it matches ``Add`` only, so the residual add is
    written as ``Sum``, the same arithmetic. Two patterns:

    - ``SkipLayerNormalization(x, skip, gamma, beta, bias)`` of the fused graph ->
      ``Sum(x, skip, bias)`` -> ``LayerNormalization(gamma, beta)``, its epsilon kept;
      left alone when its mean / inv-std outputs are used;
    - ``Add`` -> ``LayerNormalization`` of the plain export: that ``Add`` becomes ``Sum``.

    Nothing changes numerically beyond float summation order (logits equal to ~1e-6).
    Needs opset >= 17 (LayerNormalization); an older graph is left as it is (returns 0).
    """
    from onnx import helper

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 17:
        return 0
    graph = model.graph
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    outputs = {o.name for o in graph.output}
    producers = {out: node for node in graph.node for out in node.output}
    count, nodes = 0, []
    for node in graph.node:
        if node.op_type == "LayerNormalization" and node.domain in ("", "ai.onnx"):
            add = producers.get(node.input[0])
            if (
                add is not None
                and add.op_type == "Add"
                and add.domain in ("", "ai.onnx")
                and consumers.get(add.output[0], 0) == 1
                and add.output[0] not in outputs
            ):
                add.op_type = "Sum"  # the node is appended (or was already) in its own place below
                count += 1
        if node.op_type != "SkipLayerNormalization" or node.domain != "com.microsoft":
            nodes.append(node)
            continue
        outs = list(node.output) + [""] * (4 - len(node.output))
        if any(o and (consumers.get(o) or o in outputs) for o in outs[1:3]):
            nodes.append(node)
            continue
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
        inputs = list(node.input) + [""] * (5 - len(node.input))
        summed = outs[3] or f"{node.name or node.output[0]}_residual_sum"
        nodes.append(
            helper.make_node(
                "Sum", [i for i in (inputs[0], inputs[1], inputs[4]) if i], [summed], name=f"{node.name}_Sum"
            )
        )
        norm_inputs = [summed, inputs[2]] + ([inputs[3]] if inputs[3] else [])
        nodes.append(
            helper.make_node(
                "LayerNormalization", norm_inputs, [outs[0]], name=f"{node.name}_LayerNorm", axis=-1, epsilon=epsilon
            )
        )
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def unfuse_embed_layernorm(model) -> int:
    """Rewrite ORT's fused ``EmbedLayerNormalization`` as plain Gathers + Add + LayerNormalization, in place.

    Why: a 4-bit word-embedding table (``GatherBlockQuantized``) needs the word-embedding
    lookup to be a plain ``Gather``, and the fused graph the pipeline hands this step (the
    optimize_onnx output; the plain export is not an input of the step) hides it inside
    ``EmbedLayerNormalization``, which only takes a float or an int8 table. So for the int4
    choice the fused graph is taken apart again here, everything else in it (Attention,
    SkipLayerNormalization, BiasGelu) left fused. Per node:

    - ``Gather(word, ids)`` + ``Gather(position, position_ids or 0 .. sequence-1)``
      [+ ``Gather(token_type, segment_ids)``] as one ``Sum`` (ORT leaves Sum + LayerNorm
      alone, see :func:`split_layernorm`), then ``LayerNormalization(gamma, beta)`` with the
      node's epsilon;
    - its ``mask_index`` output, where used (the Attention ops read it), as ``ReduceSum`` of
      the int32 mask over the sequence: the number of real tokens of each text, which is
      what ORT's CPU kernel writes there.

    The same arithmetic (logits equal to ~3e-6 on the demo student, checked in tests/test_quantize_int4.py). A node
    whose ``embedding_sum`` output is used, or whose mask_index is used without a mask
    input, or whose position table is not a constant, is left fused. Returns how many nodes were
    rewritten.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    count, nodes = 0, []
    for node in graph.node:
        if node.op_type != "EmbedLayerNormalization" or node.domain != "com.microsoft":
            nodes.append(node)
            continue
        ins = list(node.input) + [""] * (9 - len(node.input))
        outs = list(node.output) + [""] * (3 - len(node.output))
        ids, segment_ids, word, position, token_type, gamma, beta, mask, position_ids = ins
        mask_used = bool(outs[1]) and outs[1] in used
        rows = next((i.dims[0] for i in graph.initializer if i.name == position), None)
        if (outs[2] and outs[2] in used) or (mask_used and not mask) or (rows is None and not position_ids):
            nodes.append(node)
            continue
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
        p = node.name or f"EmbedLayerNormalization_{count}"
        new = [helper.make_node("Gather", [word, ids], [f"{p}_word"], name=f"{p}_word_Gather")]
        if not position_ids:  # 0 .. sequence-1: a slice of a constant range (ORT runs Range as 5 nodes)
            graph.initializer.extend(
                [
                    numpy_helper.from_array(np.arange(rows, dtype=np.int64), f"{p}_all_positions"),
                    numpy_helper.from_array(np.array([0], np.int64), f"{p}_zero"),
                ]
            )
            position_ids = f"{p}_positions"
            new += [
                helper.make_node("Shape", [ids], [f"{p}_sequence"], name=f"{p}_Shape", start=1, end=2),
                helper.make_node(
                    "Slice", [f"{p}_all_positions", f"{p}_zero", f"{p}_sequence"], [position_ids], name=f"{p}_Slice"
                ),
            ]
        new.append(helper.make_node("Gather", [position, position_ids], [f"{p}_position"], name=f"{p}_position_Gather"))
        terms = [f"{p}_word", f"{p}_position"]
        if token_type and segment_ids:
            new.append(
                helper.make_node(
                    "Gather", [token_type, segment_ids], [f"{p}_token_type"], name=f"{p}_token_type_Gather"
                )
            )
            terms.append(f"{p}_token_type")
        # Sum, not Add: ORT would fuse Add + LayerNormalization into its slow SkipLayerNormalization at load.
        new.append(helper.make_node("Sum", terms, [f"{p}_sum"], name=f"{p}_Sum"))
        new.append(
            helper.make_node(
                "LayerNormalization",
                [f"{p}_sum", gamma, beta],
                [outs[0]],
                name=f"{p}_LayerNorm",
                axis=-1,
                epsilon=epsilon,
            )
        )
        if mask_used:
            graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), f"{p}_sequence_axis"))
            new.append(
                helper.make_node(
                    "ReduceSum", [mask, f"{p}_sequence_axis"], [outs[1]], name=f"{p}_mask_index", keepdims=0
                )
            )
        nodes.extend(new)
        count += 1
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
    return count


def word_embedding_gather(model) -> str | None:
    """Name of the Gather that looks token ids up in the word-embedding table, or None.

    The one whose table is a rank-2 float initializer and whose indices are the graph input
    ``input_ids`` (directly or through Casts): the position and token-type lookups take other
    indices, the pooler's Gather takes an activation.
    """
    from onnx import TensorProto

    tables = {i.name for i in model.graph.initializer if len(i.dims) == 2 and i.data_type == TensorProto.FLOAT}
    producers = {out: node for node in model.graph.node for out in node.output}

    def from_ids(name: str) -> bool:
        while name in producers and producers[name].op_type == "Cast":
            name = producers[name].input[0]
        return name == "input_ids"

    for node in model.graph.node:
        if node.op_type == "Gather" and node.domain in ("", "ai.onnx") and node.input[0] in tables:
            if from_ids(node.input[1]) and node.name:
                return node.name
    return None


def _int4_word_embeddings(source: Path, target: Path, word: str, block_size: int) -> int:
    """The word-embedding Gather ``word`` as ORT's GatherBlockQuantized (4-bit, symmetric); returns how many.

    ORT's own weight-only quantizer (``MatMulNBitsQuantizer``, RTN): signed 4-bit values in
    blocks of ``block_size`` along the hidden axis, one float scale per block, no zero points.
    Every other Gather is excluded (it quantizes any Gather with a constant table, including
    the int8 tables ``quantize_dynamic`` wrote). It stamps the graph opset 21 / IR 10 (int4
    tensors need them); ORT 1.32 runs the result with its CPU contrib op.
    """
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    model = onnx.load(str(source))
    for i, node in enumerate(model.graph.node):  # exclusion is by name: a nameless Gather must get one
        if node.op_type == "Gather" and not node.name:
            node.name = f"Gather_unnamed_{i}"
    others = [n.name for n in model.graph.node if n.op_type == "Gather" and n.name != word]
    algo = DefaultWeightOnlyQuantConfig(
        block_size=block_size,
        is_symmetric=True,
        bits=4,
        op_types_to_quantize=("Gather",),
        quant_axes=(("Gather", 1),),
    )
    quantizer = MatMulNBitsQuantizer(model, nodes_to_exclude=others, algo_config=algo)
    with np.errstate(invalid="ignore", divide="ignore"):  # an all-zero block (the padding row) has scale 0
        quantizer.process()
    quantizer.model.save_model_to_file(str(target), use_external_data_format=_large(source))
    return sum(n.op_type == "GatherBlockQuantized" for n in quantizer.model.model.graph.node)


@dataclass(frozen=True)
class DynamicVariant:
    """One way to build the ORT dynamic INT8 model (see :class:`shrink.config.Int8SearchConfig`)."""

    kernel: str
    graph: str = "fused"
    embeddings: str = "int8"
    layernorm: str = "skip"

    @property
    def name(self) -> str:
        """A stable name: what the log, the metrics and the benchmark scripts call it."""
        return f"{self.kernel}.{self.graph}.emb-{self.embeddings}.ln-{self.layernorm}"

    def op_types(self) -> list[str]:
        """The ``op_types_to_quantize`` of ``quantize_dynamic``; the other MatMuls get MatMulNBits first.

        With int4 embeddings the position / token-type Gathers are quantized to int8 like the
        int8 choice does; the word-embedding Gather is excluded there and gets 4 bits after.
        """
        ops = ["Attention"] + (["MatMul"] if self.kernel.startswith("integer") else [])
        return ops + (["Gather", "EmbedLayerNormalization"] if self.embeddings in ("int8", "int4") else [])

    def per_channel(self, cfg: QuantizeConfig) -> bool:
        """Per-channel weights: named by the integer kernels; QAttention next to MatMulNBits follows the config."""
        return {"integer-per-tensor": False, "integer-per-channel": True}.get(self.kernel, cfg.per_channel)


def graph_kind(model) -> str:
    """'fused' for a graph the ORT transformers optimizer wrote, 'plain' for a bare export."""
    return "fused" if any(n.op_type in _FUSED_OPS for n in model.graph.node) else "plain"


def dynamic_variants(cfg: QuantizeConfig, graphs: list[str]) -> list[DynamicVariant]:
    """The variants a step builds: the search lists, restricted by an explicit kernel and the graphs at hand.

    ``graphs`` are the graph kinds the step was given. A listed graph it was not given is
    skipped; when none of the listed ones is there, the one it was given is used, so a step
    fed only the plain export still quantizes it.
    """
    search = cfg.search
    if cfg.matmul_kernel == "nbits":
        kernels = ["nbits"]
    elif cfg.matmul_kernel == "integer":
        kernels = ["integer-per-channel" if cfg.per_channel else "integer-per-tensor"]
    else:
        kernels = list(search.kernels)
    usable = [g for g in search.graphs if g in graphs] or graphs[:1]
    embeddings = search.embeddings or ["int8" if cfg.quantize_embeddings else "fp32"]
    return [DynamicVariant(k, g, e, ln) for g in usable for k in kernels for e in embeddings for ln in search.layernorm]


def _budget(rows: dict[str, dict[str, Any]], search: Any) -> tuple[list[str], str]:
    """(names within the accuracy budget, why): see :func:`choose_variant`."""
    agreement = {n: r.get("agreement") for n, r in rows.items()}
    known = [a for a in agreement.values() if a is not None]
    best = max(known) if known else 0.0
    close = [n for n, a in agreement.items() if a is None or a >= best - search.max_agreement_drop - 1e-12]
    eligible = [n for n in close if agreement[n] is None or agreement[n] >= search.min_agreement]
    if eligible:
        return eligible, "fastest within the accuracy budget"
    return close, f"no variant reaches min_agreement {search.min_agreement:.2%}; fastest of the most accurate"


def choose_variant(rows: dict[str, dict[str, Any]], search: Any) -> tuple[str, str]:
    """(winner, why) among measured variants: ``rows`` maps a name to its agreement, size_mb and p50_ms.

    Eligible: agreement within ``search.max_agreement_drop`` of the best variant's and at
    least ``search.min_agreement`` (when no variant reaches that floor, the drop alone
    decides, and ``why`` says so; a row without agreement is judged on speed alone). The
    fastest eligible row sets the pace. With ``search.prefer`` "fastest", any eligible row
    within ``tie_margin`` of its p50 may win instead by agreeing more with FP32, then by
    being smaller, then by speed; with "smallest", the smallest eligible row within
    ``size_margin`` of it wins (then the one agreeing more, then the faster). A row without
    a timing (a step that built one variant) counts as infinitely slow.
    """
    if not rows:
        raise ShrinkError("quantize.search: no variant was built")
    eligible, why = _budget(rows, search)
    p50 = {n: rows[n].get("p50_ms") or float("inf") for n in rows}
    pace = min(eligible, key=lambda n: p50[n])
    margin = search.size_margin if search.prefer == "smallest" else search.tie_margin
    ties = [n for n in eligible if p50[n] <= p50[pace] * (1 + margin)]
    agreement = {n: rows[n].get("agreement") or 0.0 for n in ties}
    if search.prefer == "smallest":
        winner = min(ties, key=lambda n: (rows[n]["size_mb"], -agreement[n], p50[n]))
        reason = "the smallest (prefer: smallest)"
    else:
        winner = max(ties, key=lambda n: (agreement[n], -rows[n]["size_mb"], -p50[n]))
        reason = "agrees more with FP32 or is smaller"
    if winner != pace:
        why = f"within {margin:.0%} of the fastest ({pace}) and {reason}"
    return winner, why


def time_variants(dirs: dict[str, Path], texts: list[str], rounds: int, requests: int, threads: int) -> dict:
    """Batch-1 latency of each artifact (tokenize + run, as a request is served), all in this process.

    Every model is opened through :func:`shrink.runtime.open_classifier` (its own tokenizer
    and recorded runtime settings, ``threads`` intra-op threads) and they take turns: each
    round runs every model on the same ``requests`` texts, in an order rotated from round to
    round, after 5 untimed requests, so a change in background load hits all of them alike.
    The thread is pinned to the benchmark's core while timing (one thread: ORT computes on
    it). Returns name -> {p50_ms, p90_ms, requests}.
    """
    import gc
    import os
    import time

    from shrink.benchmark import pinned_cpus
    from shrink.runtime import open_classifier

    names = list(dirs)
    models = {n: open_classifier(dirs[n], threads=threads) for n in names}
    samples: dict[str, list[float]] = {n: [] for n in names}
    saved = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    cpus = pinned_cpus(threads)
    if cpus and saved is not None:
        os.sched_setaffinity(0, cpus)
    try:
        gc.collect()
        for r in progress(range(rounds), desc="timing INT8 variants"):
            batch = [texts[(r * requests + i) % len(texts)] for i in range(requests)]
            for k in range(len(names)):
                name = names[(k + r) % len(names)]
                model = models[name]
                for text in batch[:5]:
                    model.predict([text])
                for text in batch:
                    t0 = time.perf_counter()
                    model.predict([text])
                    samples[name].append((time.perf_counter() - t0) * 1e3)
    finally:
        if cpus and saved is not None:
            os.sched_setaffinity(0, saved)
    return {
        n: {
            "p50_ms": float(np.percentile(s, 50)),
            "p90_ms": float(np.percentile(s, 90)),
            "requests": len(s),
        }
        for n, s in samples.items()
    }


def _dynamic_int8(
    prepared: Path,
    target: Path,
    variant: DynamicVariant,
    cfg: QuantizeConfig,
    exclude: list[str],
    tmp: Path,
    word: str | None = None,
) -> None:
    """One ``quantize_dynamic`` call (after MatMulNBits for that kernel): the model file of a variant.

    With int4 embeddings ``word`` names the word-embedding Gather: ``quantize_dynamic`` leaves
    it alone and :func:`_int4_word_embeddings` then stores its table in 4 bits.
    """
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    source = prepared
    if variant.kernel == "nbits":
        source = tmp / f"nbits-{prepared.parent.name}.onnx"  # one per prepared graph (int4 has its own)
        if not source.is_file():
            count = _nbits_matmuls(prepared, source, cfg, exclude)
            log.info("%s graph: %d MatMuls -> MatMulNBits (8-bit, block %d)", variant.graph, count, cfg.block_size)
    int4 = variant.embeddings == "int4"
    if int4 and word is None:
        raise ShrinkError(f"{prepared}: int4 embeddings need the word-embedding Gather's name")
    try:
        ort_quantize_dynamic(
            str(source),
            str(target),
            op_types_to_quantize=variant.op_types(),
            per_channel=variant.per_channel(cfg),
            reduce_range=cfg.reduce_range,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude + ([word] if int4 else []),
            use_external_data_format=_large(prepared),
            extra_options={"MatMulConstBOnly": True, "DefaultTensorType": TensorProto.FLOAT},
        )
    except (ValueError, RuntimeError, KeyError) as exc:
        raise ShrinkError(f"{prepared}: ORT dynamic quantization failed: {exc}".splitlines()[0]) from None
    if int4:
        block = cfg.search.embedding_block_size
        try:
            count = _int4_word_embeddings(target, target, word, block)
        except (ValueError, RuntimeError, KeyError, AssertionError) as exc:
            raise ShrinkError(f"{prepared}: 4-bit word embeddings failed: {exc}".splitlines()[0]) from None
        if count != 1:
            raise ShrinkError(f"{prepared}: {word} did not become GatherBlockQuantized (4-bit embeddings)")
        log.info("%s: word embeddings (%s) -> GatherBlockQuantized (4-bit, block %d)", variant.name, word, block)


def _prepare_source(path: Path, folder: Path, int4: bool) -> tuple[Path, Any, str | None]:
    """(prepared file, its proto, word-embedding Gather or None): the graph a variant quantizes.

    For int4 embeddings the fused graph's EmbedLayerNormalization is taken apart first
    (:func:`unfuse_embed_layernorm`), so the word-embedding lookup is a plain Gather; the
    plain export has one already. Then ORT's pre-quantization pass (:func:`_preprocess`).
    """
    folder.mkdir()
    source = path
    if int4:
        import onnx

        proto = onnx.load(str(path))
        if unfuse_embed_layernorm(proto):
            source = folder / "unfused" / MODEL_FILE
            source.parent.mkdir()
            large = proto.ByteSize() > EXTERNAL_DATA_BYTES
            onnx.save(proto, str(source), save_as_external_data=large, location=MODEL_FILE + ".data")
    ready, model = _preprocess(source, str(folder))
    word = word_embedding_gather(model) if int4 else None
    if int4 and word is None:
        raise ShrinkError(
            f"{path}: no word-embedding Gather (a float table looked up by input_ids) to store in 4 bits; "
            "list quantize.search.embeddings without int4"
        )
    return ready, model, word


def _variant_settings(variant: DynamicVariant, cfg: QuantizeConfig, source: ArtifactMeta) -> dict[str, Any]:
    settings = {
        "variant": variant.name,
        "matmul_kernel": "nbits" if variant.kernel == "nbits" else "integer",
        "kernel": variant.kernel,
        "graph": variant.graph,
        "embeddings": variant.embeddings,
        "layernorm": variant.layernorm,
        "op_types": variant.op_types(),
        "per_channel": variant.per_channel(cfg),
        "reduce_range": cfg.reduce_range,
        "weight_type": "int8",
        "keep_fp32": cfg.keep_fp32,
        "source_technique": source.technique,
    }
    if variant.kernel == "nbits":
        settings |= {"block_size": cfg.block_size, "accuracy_level": NBITS_ACCURACY_LEVEL}
    if variant.embeddings == "int4":
        settings |= {
            "embedding_bits": 4,
            "embedding_block_size": cfg.search.embedding_block_size,
            "embedding_op": "GatherBlockQuantized",
        }
    return settings


def _build_variants(
    sources: dict[str, tuple[Path, ArtifactMeta, Path]], variants: list[DynamicVariant], cfg: QuantizeConfig, tmp: Path
) -> dict[str, dict[str, Any]]:
    """Build and seal every variant under ``tmp``; name -> {variant, dir, size_mb, agreement, ...}.

    One ``quantize_dynamic`` per (graph, kernel, embeddings); the "split" LayerNorm form is a
    rewrite of that file, not another quantization. The int4 embeddings choice quantizes its
    own copy of the graph, with the embeddings unfused (:func:`_prepare_source`). Each is sealed as an artifact so the
    parity check and the timing open it exactly as serving would.
    """
    import onnx

    built: dict[str, dict[str, Any]] = {}
    prepared: dict[tuple[str, bool], tuple[Path, list[str], str | None]] = {}
    for variant in variants:
        model_dir, meta, path = sources[variant.graph]
        key = (variant.graph, variant.embeddings == "int4")
        if key not in prepared:
            folder = tmp / f"prep-{variant.graph}{'-int4' if key[1] else ''}"
            ready, model, word = _prepare_source(path, folder, int4=key[1])
            prepared[key] = ready, _excluded_nodes(model, cfg.keep_fp32), word
        ready, exclude, word = prepared[key]
        base = DynamicVariant(variant.kernel, variant.graph, variant.embeddings, "skip")
        target = tmp / "variants" / variant.name
        target.mkdir(parents=True)
        base_file = tmp / "variants" / base.name / MODEL_FILE
        if variant.layernorm == "skip" or not base_file.is_file():
            _dynamic_int8(ready, target / MODEL_FILE, base, cfg, exclude, tmp, word)
        if variant.layernorm == "split":
            proto = onnx.load(
                str(target / MODEL_FILE if not base_file.is_file() else base_file), load_external_data=False
            )
            rewritten = split_layernorm(proto)
            if not rewritten:
                log.info("%s: no SkipLayerNormalization or Add + LayerNormalization to split; skipped", variant.name)
                shutil.rmtree(target)
                continue
            if base_file.is_file():  # external weights, when the model has them, sit beside the graph
                for data in base_file.parent.glob(MODEL_FILE + "?*"):
                    shutil.copy2(data, target / data.name)
            onnx.save(proto, str(target / MODEL_FILE))
        copy_companions(model_dir, target)
        # quantized_ops as the final artifact records them: the runtime then answers each text alone where
        # activation scales are per run (OrtClassifier), so the agreement judged here is the one served.
        sealed = write_artifact(
            target,
            format="onnx",
            precision="int8",
            label_names=meta.label_names,
            technique="ort-dynamic-int8",
            settings={**inherited_settings(meta), **_variant_settings(variant, cfg, meta)},
            runtime=runtime_settings(cfg.runtime),
            extra={"model_file": MODEL_FILE, "quantized_ops": quantized_ops(load_onnx_graph(target / MODEL_FILE))},
        )
        row: dict[str, Any] = {"variant": variant, "dir": target, "size_mb": weights_bytes(target, sealed) / 1e6}
        parity = measure_against_parity(target)
        if parity is not None:
            row |= {"agreement": parity["agreement"], "max_abs_diff": parity["max_abs_diff"]}
        built[variant.name] = row
        log.info(
            "variant %s: %.2f MB, agreement with FP32 %s",
            variant.name,
            row["size_mb"],
            f"{row['agreement']:.2%}" if "agreement" in row else "unknown (no parity.json)",
        )
    return built


def quantize_ort_dynamic(
    model_dir: str | Path,
    out_dir: str | Path,
    cfg: QuantizeConfig,
    parent_uri: str | None = None,
    plain_dir: str | Path | None = None,
    plain_uri: str | None = None,
) -> ArtifactMeta:
    """ONNX Runtime dynamic INT8, the fastest of its variants that keeps accuracy (or the smallest: ``search.prefer``).

    Weights are quantized offline, activations at run time. ``quantize_dynamic`` turns the
    fused Attention into QAttention and, with int8 embeddings, the word-embedding Gather /
    EmbedLayerNormalization into their quantized forms, which takes the file to ~1/4 of
    FP32; nodes named by ``keep_fp32`` (pooler, classifier) stay FP32. What else varies is
    the search (:class:`shrink.config.Int8SearchConfig`, every variant built, checked against
    the FP32 reference on the parity slice, then timed by :func:`time_variants`):

    - the other MatMuls (attention output, both FFN layers): MatMulInteger (fused by ORT at
      load into DynamicQuantizeMatMul, ONE activation scale per tensor) with per-tensor or
      per-channel weights, or MatMulNBits (8-bit weights in blocks of ``block_size``,
      activations quantized per block). Which is best depends on the model: on the 6-layer
      MiniLM teacher per-tensor weights cost 3 points of agreement with FP32 and MatMulNBits
      was the most accurate (99.35%); on the demo's 3-layer student every kernel agrees within
      noise and MatMulNBits' kernel is the slowest, ~50 us per FFN MatMul against ~20 us
      for DynamicQuantizeMatMul (ORT profile, 14 tokens), 0.62 against 0.42 ms a request;
    - the graph: the fused one (one QAttention per layer) or the plain export, if given;
    - the residual LayerNorms: ORT's SkipLayerNormalization or Sum + LayerNormalization
      (:func:`split_layernorm`, ~0.1 ms a request faster on ORT 1.32);
    - the embeddings: int8, fp32, or int4: the word-embedding table in 4-bit blocks
      (``search.embedding_block_size``) written by ORT's own ``MatMulNBitsQuantizer`` as
      ``GatherBlockQuantized``, the position / token-type tables int8. The fused graph hides
      the word-embedding lookup inside EmbedLayerNormalization, which takes no 4-bit table,
      and this step is given only that graph in the pipeline, so for int4 the node is
      rewritten back into Gathers + Sum + LayerNormalization first
      (:func:`unfuse_embed_layernorm`, the same arithmetic); Attention and the rest stay
      fused. On the demo student: 16% smaller file, a request ~10% slower (GatherBlockQuantized's
      CPU kernel), agreement 0.4 point lower; ``search.prefer: smallest`` is what keeps it.

    The winner (:func:`choose_variant`) is written to ``out_dir``; every variant's agreement,
    size and step timing is recorded in ``shrink.json`` (``extra.variants``, and flat in the
    metrics) and in the log. ``plain_dir``: the plain export the fused graph was made from,
    for the "plain" graph choice; the artifact's parent is whichever graph the winner came
    from. ``reduce_range`` (7-bit weights) only matters on x86 CPUs without VNNI.
    """
    model_dir = Path(model_dir)
    meta, path, model = open_onnx_source(model_dir, "ORT dynamic INT8")
    sources = {graph_kind(model): (model_dir, meta, path)}
    uris = {graph_kind(model): parent_uri}
    if plain_dir is not None:
        plain_meta, plain_path, plain_model = open_onnx_source(plain_dir, "ORT dynamic INT8 (plain graph)")
        if graph_kind(plain_model) != "plain":
            raise ShrinkError(f"{plain_path}: the plain-graph input holds fused ops; give it the export_onnx output")
        sources.setdefault("plain", (Path(plain_dir), plain_meta, plain_path))
        uris.setdefault("plain", plain_uri)
    variants = dynamic_variants(cfg, list(sources))
    reference = read_parity(model_dir)
    if reference is None and len(variants) > 1:
        # Same arithmetic, faster on ORT 1.32: "split" is the LayerNorm form to take unmeasured.
        # Unjudged, int4 embeddings (which cost agreement) are taken only when nothing else is listed.
        rank = {"kernel": {_SAFEST_KERNEL: 0}, "layernorm": {"split": 0}, "embeddings": {"int4": 1}}
        keep = min(
            variants,
            key=lambda v: (
                rank["embeddings"].get(v.embeddings, 0),
                rank["kernel"].get(v.kernel, 1),
                rank["layernorm"].get(v.layernorm, 1),
            ),
        )
        log.warning(
            "%s: no parity.json, so no FP32 reference to judge accuracy by nor real texts to time on; building %s only",
            model_dir,
            keep.name,
        )
        variants = [keep]
    log.info("ORT dynamic INT8 of %s: %d variants: %s", path, len(variants), ", ".join(v.name for v in variants))
    search = cfg.search
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="shrink-int8-") as tmp:
        built = _build_variants(sources, variants, cfg, Path(tmp))
        if len(built) > 1:
            timing = time_variants(
                {n: r["dir"] for n, r in built.items()},
                reference[0],
                search.timing_rounds,
                search.timing_requests,
                cfg.runtime.intra_op_threads or 1,
            )
            for name, row in built.items():
                row |= timing[name]
        winner, why = choose_variant(built, search)
        table = _log_variants(built, winner, why, search)
        chosen = built[winner]
        for item in chosen["dir"].iterdir():
            if item.name == MODEL_FILE or item.name.startswith(MODEL_FILE + "."):
                shutil.copy2(item, out / item.name)
    variant = chosen["variant"]
    source_dir, source_meta, _ = sources[variant.graph]
    settings = _variant_settings(variant, cfg, source_meta) | {"choice": why, "variants_tried": len(table)}
    metrics_extra = {"variant_p50_ms": chosen["p50_ms"]} if "p50_ms" in chosen else {}
    for row in table:
        for key in ("p50_ms", "agreement", "size_mb"):
            if key in row:
                metrics_extra[f"{key}.{row['variant']}"] = row[key]
    return _finish_int8(
        out,
        source_dir,
        source_meta,
        cfg,
        "ort-dynamic-int8",
        settings,
        uris[variant.graph],
        extra={"variants": table},
        extra_metrics=metrics_extra,
    )


def _log_variants(built: dict[str, dict[str, Any]], winner: str, why: str, search: Any) -> list[dict[str, Any]]:
    """Log every variant (fastest first) and by how much the winner won; return the rows as plain data."""
    table = []
    for name, row in sorted(built.items(), key=lambda kv: kv[1].get("p50_ms") or float("inf")):
        table.append({"variant": name, **{k: v for k, v in row.items() if k not in ("variant", "dir")}})
        log.info(
            "  %-45s %9s  agreement %7s  %6.2f MB%s",
            name,
            f"{row['p50_ms']:.3f} ms" if "p50_ms" in row else "-",
            f"{row['agreement']:.2%}" if "agreement" in row else "-",
            row["size_mb"],
            "  <- " + why if name == winner else "",
        )
    mine = built[winner].get("p50_ms")
    others = [r for r in table if "p50_ms" in r and r["variant"] != winner]
    if mine is None or not others:
        log.info("winner %s (%s)", winner, why)
        return table

    def lead(other: dict[str, Any]) -> str:
        change = 1 - mine / other["p50_ms"]
        word = "faster" if change >= 0 else "slower"
        return f"{abs(change):.0%} {word} than {other['variant']} ({other['p50_ms']:.3f} ms)"

    eligible = set(_budget(built, search)[0])
    parts = []
    runner_up = next((r for r in others if r["variant"] in eligible), None)
    if runner_up is not None:
        parts.append(f"{lead(runner_up)}, the next within budget")
    parts.append(f"{lead(others[-1])}, the slowest")
    log.info("winner %s (%.3f ms): %s", winner, mine, "; ".join(parts))
    for row in others:
        if row["variant"] not in eligible and row["p50_ms"] < mine:
            log.info(
                "  %s is faster (%.3f ms) but outside the accuracy budget (agreement %.2f%%)",
                row["variant"],
                row["p50_ms"],
                100 * row["agreement"],
            )
    return table


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

    With "split" in ``search.layernorm`` (the default) the residual adds before each
    LayerNorm are written as ``Sum`` (:func:`split_layernorm`), so ORT does not fuse them
    into its slow SkipLayerNormalization at load: the demo's student 0.555 -> 0.458 ms a
    request, same predictions. Still slower than dynamic INT8 of the fused graph (0.36 ms):
    QDQ has no form of the fused Attention, so static keeps the plain export's unfused
    attention (per-head MatMuls, Softmax, Transposes) with QDQ pairs around it.
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
    layernorm = "skip"
    if "split" in cfg.search.layernorm:
        import onnx

        proto = onnx.load(str(out / MODEL_FILE), load_external_data=False)
        if split_layernorm(proto):
            onnx.save(proto, str(out / MODEL_FILE))
            layernorm = "split"
    settings = {
        "format": "QDQ",
        "layernorm": layernorm,
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
