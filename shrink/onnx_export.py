"""PyTorch classifier -> ONNX, checked for parity, then fused by the ONNX Runtime transformers optimizer.

Why the TorchScript exporter (``dynamo=False``): on BERT-class models from
transformers 5 the torch.export-based (dynamo) exporter in torch 2.13 produces a
graph whose attention and embedding subgraphs the ONNX Runtime transformers
optimizer does not recognise (measured on the tiny BERT: Attention 0,
EmbedLayerNormalization 0 fused, against 4 and 1 with TorchScript), and it
takes ~10x longer. TorchScript export is deprecated but present in torch 2.13;
:func:`export_onnx` is the one place to change when it goes.

Every ONNX artifact carries ``parity.json``: a sample of validation texts with the
logits the source PyTorch model gave them. Later steps (graph optimization,
INT8) measure agreement with FP32 against it without needing the dataset or
the PyTorch model again, so each artifact records how far it is from the
model it was made from.
"""

from __future__ import annotations

import inspect
import json
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from shrink.artifact import META_FILE, ArtifactMeta, model_files, read_meta, write_artifact
from shrink.config import QuantizeConfig, RuntimeConfig, save_yaml, to_dict
from shrink.errors import ShrinkError
from shrink.logs import log

MODEL_FILE = "model.onnx"
PARITY_FILE = "parity.json"
CONFIG_FILE = "quantize.yaml"
# Beyond this protobuf's 2 GiB limit is near; weights then go to an external data file.
EXTERNAL_DATA_BYTES = 1_800_000_000
# Nodes that only exist in a quantized graph: a model holding any of them is INT8 already.
QUANTIZED_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "MatMulInteger",
        "QLinearMatMul",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "QAttention",
        "QEmbedLayerNormalization",
        "QGemm",
        "QLinearAdd",
        "QLinearMul",
        "ConvInteger",
        "QLinearConv",
        "MatMulNBits",
        "GatherBlockQuantized",
    }
)
# Fusions the ORT optimizer must find in a BERT-class encoder; any GELU form counts for the FFN.
REQUIRED_FUSIONS = {
    "Attention": ("Attention",),
    "SkipLayerNormalization": ("SkipLayerNormalization",),
    "Gelu": ("BiasGelu", "FastGelu", "Gelu", "GemmFastGelu"),
    "EmbedLayerNormalization": ("EmbedLayerNormalization",),
}


# --------------------------------------------------------------------------- shared checks


def runtime_settings(cfg: RuntimeConfig) -> dict[str, Any]:
    """The ``meta.runtime`` of an ONNX artifact, so :func:`shrink.runtime.open_classifier` runs what was chosen."""
    return to_dict(cfg)


def check_opset(opset: int, where: str) -> None:
    """Fail early when the installed ONNX Runtime cannot run ``opset``.

    ORT exposes no "max opset" call, so a one-node model stamped with the opset is
    loaded: the answer is exactly the one the real session would give, in milliseconds.
    """
    import onnxruntime as ort
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [value],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    probe.ir_version = 8  # the oldest IR for opset 17; the probe asks about the opset alone
    try:
        ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        limit = re.search(r"support for domain ai\.onnx is till opset \d+", str(exc))
        raise ShrinkError(
            f"{where}: opset {opset} is not supported by the installed onnxruntime "
            f"{ort.__version__}" + (f" (its {limit.group(0)})" if limit else "")
        ) from None


def require_classifier(model_dir: str | Path) -> dict[str, Any]:
    """The HF ``config.json`` of a sequence classifier, or a clear error for a bare encoder."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ShrinkError(f"{model_dir}: no config.json; not a Hugging Face classifier artifact")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ShrinkError(f"{path}: not valid JSON: {exc}") from None
    archs = config.get("architectures") or []
    if not any(str(a).endswith("ForSequenceClassification") for a in archs):
        raise ShrinkError(
            f"{path}: not a sequence classifier (architectures: {archs or 'none'}); "
            "fine-tune or distil it into a *ForSequenceClassification model first"
        )
    return config


def load_onnx_graph(path: str | Path):
    """The ONNX model proto (weights left on disk), with a clear error for a corrupt file."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ShrinkError(f"{path}: ONNX model file is missing")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and friends
        raise ShrinkError(f"{path}: not a valid ONNX model ({type(exc).__name__}: {exc})".splitlines()[0]) from None


def quantized_ops(model) -> dict[str, int]:
    """Counts of quantization operators in a graph (empty for a float model)."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type in QUANTIZED_OPS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def default_opset(model) -> int:
    """The ai.onnx opset a graph is stamped with (0 when it declares none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def open_onnx_source(model_dir: str | Path, step: str, allow_int8: bool = False) -> tuple[ArtifactMeta, Path, Any]:
    """(meta, model path, proto) of an ONNX artifact a step may work on; rejects what it must not touch."""
    model_dir = Path(model_dir)
    meta = read_meta(model_dir)
    if meta.format != "onnx":
        raise ShrinkError(f"{model_dir}: a {meta.format} artifact; {step} needs an ONNX one (run export_onnx first)")
    path = model_dir / meta.extra.get("model_file", MODEL_FILE)
    model = load_onnx_graph(path)
    if not allow_int8:
        ops = quantized_ops(model)
        if meta.precision == "int8" or ops:
            found = f" (holds {', '.join(sorted(ops))})" if ops else ""
            raise ShrinkError(f"{path}: already quantized to INT8{found}; {step} needs the FP32 model")
    check_opset(default_opset(model), str(path))
    return meta, path, model


def inherited_settings(parent: ArtifactMeta) -> dict[str, Any]:
    """Settings a child must keep so it tokenizes exactly as its parent (the max sequence length)."""
    return {"max_length": parent.settings["max_length"]} if "max_length" in parent.settings else {}


def copy_companions(src: str | Path, dst: str | Path) -> None:
    """Tokenizer, HF config and parity reference of an artifact: everything except its model and manifest."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.name in (META_FILE, CONFIG_FILE) or item.suffix in (".onnx", ".data", ".safetensors"):
            continue
        if item.is_file():
            shutil.copy2(item, dst / item.name)


def weights_bytes(directory: str | Path, meta: ArtifactMeta) -> int:
    """Bytes of an artifact's weight files (model + external data), the figure compression is computed on."""
    return sum(model_files(directory, meta).values())


# --------------------------------------------------------------------------- parity


def read_parity(model_dir: str | Path) -> tuple[list[str], np.ndarray] | None:
    """(texts, FP32 PyTorch logits) saved at export, or None for an ONNX artifact from elsewhere."""
    path = Path(model_dir) / PARITY_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return data["texts"], np.asarray(data["logits"], dtype=np.float32)


def compare_logits(reference: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """Max abs logit difference and argmax agreement of a candidate against its FP32 reference."""
    if reference.shape != logits.shape:
        raise ShrinkError(f"logits of shape {logits.shape} cannot be compared with reference {reference.shape}")
    return {
        "max_abs_diff": float(np.abs(reference - logits).max()) if reference.size else 0.0,
        "agreement": float((reference.argmax(-1) == logits.argmax(-1)).mean()) if len(reference) else 1.0,
        "examples": len(reference),
    }


def measure_against_parity(model_dir: str | Path, batch_size: int = 64) -> dict[str, float] | None:
    """Run a sealed artifact through :func:`open_classifier` on its parity texts, as serving would."""
    from shrink.runtime import open_classifier

    parity = read_parity(model_dir)
    if parity is None:
        return None
    texts, reference = parity
    clf = open_classifier(model_dir)
    _, logits = clf.predict_all(texts, batch_size=batch_size)
    return compare_logits(reference, logits)


# --------------------------------------------------------------------------- export


def parity_texts(dataset_dir: str | Path, n: int, seed: int = 0) -> list[str]:
    """A fixed random sample of validation texts, the same on every run of the pipeline.

    Validation, not test: the INT8 search chooses its variant by agreement on these texts, and no test
    input may inform a choice (the test split only scores the result). Unlabelled agreement with FP32
    needs no more than inputs the training never saw.
    """
    from shrink.data import load_prepared

    dd, _ = load_prepared(dataset_dir)
    texts = list(dd["validation"]["text"])
    if not texts:
        raise ShrinkError(f"{dataset_dir}: the validation split is empty; nothing to check parity on")
    return random.Random(seed).sample(texts, min(n, len(texts)))


def _logits_only(model, input_names: list[str]):
    """A module returning the logits tensor: exporters take positional tensors, not a ModelOutput."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *args):
            return self.model(**dict(zip(input_names, args, strict=True))).logits

    # eval() matters: the exporter restores the wrapper's mode afterwards, recursively, on the model too.
    return LogitsOnly().eval()


def load_torch_source(model_dir: str | Path):
    """(model in eval mode with eager attention, tokenizer, meta) of an FP32 PyTorch classifier artifact."""
    from shrink.models import load_classifier, load_tokenizer
    from shrink.runtime import open_classifier

    model_dir = Path(model_dir)
    require_classifier(model_dir)
    meta = read_meta(model_dir)
    if meta.format != "pytorch":
        raise ShrinkError(f"{model_dir}: format {meta.format!r}; expected a PyTorch classifier artifact")
    if meta.precision == "int8":
        raise ShrinkError(f"{model_dir}: already quantized to INT8 ({meta.technique}); give the FP32 model")
    if meta.extra.get("loader"):
        # Formats with their own loading code (e.g. sparse storage) load through the runtime.
        model = open_classifier(model_dir).module
        model.set_attn_implementation("eager")
    else:
        # Eager attention: SDPA does not export to the plain MatMul/Softmax pattern the ORT fusions match.
        model = load_classifier(model_dir, attn_implementation="eager")
    return model.float().eval(), load_tokenizer(model_dir), meta


def export_onnx(
    model_dir: str | Path,
    out_dir: str | Path,
    cfg: QuantizeConfig,
    parity_texts: list[str],
    parent_uri: str | None = None,
) -> ArtifactMeta:
    """Export a PyTorch classifier artifact to ONNX and prove it predicts what PyTorch predicts.

    Batch and sequence axes are dynamic, as serving pads each batch to its own
    longest text. Parity runs the source artifact and the new one through
    :func:`shrink.runtime.open_classifier` on ``parity_texts``: argmax agreement
    must be 100% (an export that changes a prediction is a broken export, not a
    trade-off), and the max abs logit difference is recorded.
    """
    import onnx
    import torch

    from shrink.runtime import open_classifier

    if not parity_texts:
        raise ShrinkError(f"{model_dir}: no parity texts; export needs a sample of test texts to check against")
    check_opset(cfg.opset, "quantize.opset")
    from torch.onnx._constants import ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET as max_opset

    if cfg.opset > max_opset:
        raise ShrinkError(
            f"quantize.opset: {cfg.opset} is above {max_opset}, the highest the TorchScript "
            f"exporter of torch {torch.__version__} writes"
        )
    model, tokenizer, meta = load_torch_source(model_dir)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ShrinkError(f"{out}: output directory is not empty")
    out.mkdir(parents=True, exist_ok=True)

    accepted = set(inspect.signature(model.forward).parameters)
    input_names = [n for n in tokenizer.model_input_names if n in accepted]
    sample = tokenizer(
        ["a short one", "a somewhat longer text, to trace with padding"], padding=True, return_tensors="pt"
    )
    axes = {n: {0: "batch", 1: "sequence"} for n in input_names} | {"logits": {0: "batch"}}
    path = out / MODEL_FILE
    log.info("exporting %s to ONNX opset %d (inputs %s)", model_dir, cfg.opset, ", ".join(input_names))
    with torch.no_grad(), warnings.catch_warnings():
        # Known and harmless here: the TorchScript exporter's deprecation notice; the tracer's note on
        # transformers' mask padding branch (always 0 without a KV cache); aten::index for position ids.
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        torch.onnx.export(
            _logits_only(model, input_names),
            tuple(sample[n] for n in input_names),
            str(path),
            input_names=input_names,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=cfg.opset,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(str(path))
    tokenizer.save_pretrained(str(out))
    model.config.save_pretrained(str(out))

    log.info("parity: PyTorch logits on %d texts", len(parity_texts))
    _, reference = open_classifier(model_dir).predict_all(list(parity_texts))
    (out / PARITY_FILE).write_text(
        json.dumps(
            {
                "source": meta.content_hash(),
                "texts": list(parity_texts),
                "logits": [[float(f"{v:.6g}") for v in row] for row in reference.tolist()],
            }
        )
    )
    save_yaml(cfg, out / CONFIG_FILE)
    settings = {**inherited_settings(meta), "opset": cfg.opset, "exporter": "torchscript", "inputs": input_names}
    common = dict(
        format="onnx",
        precision="fp32",
        label_names=meta.label_names,
        technique="onnx-export",
        settings=settings,
        parent=meta,
        parent_uri=parent_uri,
        runtime=runtime_settings(cfg.runtime),
        extra={"model_file": MODEL_FILE, "reference": PARITY_FILE},
    )
    # Seal first, then measure through open_classifier: parity is checked on exactly what ships.
    write_artifact(out, **common)
    parity = measure_against_parity(out)
    assert parity is not None
    log.info(
        "parity: max |diff| %.2e, argmax agreement %.2f%% on %d texts",
        parity["max_abs_diff"],
        100 * parity["agreement"],
        parity["examples"],
    )
    if parity["agreement"] < 1.0:
        raise ShrinkError(
            f"{path}: ONNX predictions differ from PyTorch on {1 - parity['agreement']:.2%} of "
            f"{parity['examples']} texts (max |logit diff| {parity['max_abs_diff']:.3g})"
        )
    size = path.stat().st_size
    metrics = {
        "parity_max_abs_diff": parity["max_abs_diff"],
        "parity_agreement": parity["agreement"],
        "parity_examples": parity["examples"],
        "size_mb": size / 1e6,
    }
    return write_artifact(out, **common, metrics=metrics)


# --------------------------------------------------------------------------- graph optimization


def attention_shape(config: dict[str, Any], where: Path) -> tuple[int, int]:
    """``num_heads`` and ``hidden_size`` as ORT's attention fusion means them: the attention's own width.

    A structurally pruned model keeps its hidden size but has fewer heads, so its
    attention is narrower than the hidden state (``shrink_structure`` in the
    config). With the same head count in every layer those are exact (what
    :func:`shrink.prune.choose_structure` produces). With different counts per
    layer there is no single right pair: 0 / 0 asks ORT to detect them, which it
    cannot on these exports (the head count in their Reshape is -1), so the
    attention stays unfused and the artifact records the warning, rather than
    being fused with a head count that is wrong for some layers.
    """
    from shrink.sparse import STRUCTURE_KEY

    heads, hidden = config.get("num_attention_heads"), config.get("hidden_size")
    if not isinstance(heads, int) or not isinstance(hidden, int):
        raise ShrinkError(f"{where}: needs integer num_attention_heads and hidden_size")
    structure = config.get(STRUCTURE_KEY)
    if not structure:
        return heads, hidden
    counts, size = structure.get("heads"), structure.get("attention_head_size")
    if not counts or not isinstance(size, int):
        raise ShrinkError(f"{where}: {STRUCTURE_KEY} needs 'heads' per layer and 'attention_head_size'")
    if len(set(counts)) == 1:
        return counts[0], counts[0] * size
    return 0, 0


def optimize_onnx(
    model_dir: str | Path, out_dir: str | Path, cfg: QuantizeConfig, parent_uri: str | None = None
) -> ArtifactMeta:
    """Fuse an exported BERT-class graph with the ONNX Runtime transformers optimizer.

    ``num_heads`` and ``hidden_size`` come from the HF config saved in the
    artifact (a wrong value silently disables the Attention fusion). The
    optimizer runs at ``opt_level=0``: only its own fusions, no hardware-specific
    ORT rewrites baked into the file, so the result runs on any CPU and ORT
    applies the rest at load time per ``runtime.graph_optimization_level``.
    Missing fusions are not fatal (the graph is still correct) but are recorded
    as warnings in the artifact, because they cost most of the speed-up.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    meta, path, _ = open_onnx_source(model_dir, "graph optimization")
    config = require_classifier(model_dir)
    heads, hidden = attention_shape(config, Path(model_dir) / "config.json")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log.info("optimizing %s (bert, %d heads, hidden %d)", path, heads, hidden)
    optimizer = optimize_model(
        str(path), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0, use_gpu=False
    )
    stats = {k: int(v) for k, v in optimizer.get_fused_operator_statistics().items()}
    warnings = []
    for name, ops in REQUIRED_FUSIONS.items():
        if sum(stats.get(op, 0) for op in ops) == 0:
            warnings.append(
                f"no {name} fusion ({' / '.join(ops)} = 0): the {config.get('model_type')} graph does "
                "not match ORT's BERT patterns, so that part runs unfused and slower"
            )
    for warning in warnings:
        log.warning("%s: %s", path, warning)
    # save_model_to_file sorts the graph and declares the com.microsoft domain of the fused ops.
    optimizer.save_model_to_file(
        str(out / MODEL_FILE), use_external_data_format=optimizer.model.ByteSize() > EXTERNAL_DATA_BYTES
    )
    copy_companions(model_dir, out)
    save_yaml(cfg, out / CONFIG_FILE)
    fused = {k: v for k, v in stats.items() if v}
    common = dict(
        format="onnx",
        precision="fp32",
        label_names=meta.label_names,
        technique="ort-optimize",
        settings={
            **inherited_settings(meta),
            "model_type": "bert",
            "num_heads": heads,
            "hidden_size": hidden,
            "opt_level": 0,
        },
        parent=meta,
        parent_uri=parent_uri,
        runtime=runtime_settings(cfg.runtime),
        extra={
            "model_file": MODEL_FILE,
            "fused_operators": fused,
            "warnings": warnings,
            **({"reference": PARITY_FILE} if (out / PARITY_FILE).is_file() else {}),
        },
    )
    write_artifact(out, **common)
    metrics: dict[str, Any] = {f"fused_{k}": v for k, v in fused.items()}
    metrics["fusion_warnings"] = len(warnings)
    metrics["size_mb"] = (out / MODEL_FILE).stat().st_size / 1e6
    parity = measure_against_parity(out)
    if parity is not None:
        log.info(
            "optimized vs PyTorch FP32: max |diff| %.2e, agreement %.2f%%",
            parity["max_abs_diff"],
            100 * parity["agreement"],
        )
        if parity["agreement"] < 1.0:
            raise ShrinkError(
                f"{out / MODEL_FILE}: graph optimization changed {1 - parity['agreement']:.2%} of "
                f"predictions (max |logit diff| {parity['max_abs_diff']:.3g}); a fusion is wrong"
            )
        metrics |= {"parity_max_abs_diff": parity["max_abs_diff"], "parity_agreement": parity["agreement"]}
    return write_artifact(out, **common, metrics=metrics)
