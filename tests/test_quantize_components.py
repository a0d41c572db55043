"""The five quantization / ONNX KFP components, called as KFP would call them, chained like the pipeline."""

from __future__ import annotations

import pytest
from kfp.dsl import Dataset, Metrics, Model

from components.export_onnx.component import export_onnx
from components.optimize_onnx.component import optimize_onnx
from components.quantize_ort_dynamic.component import quantize_ort_dynamic
from components.quantize_ort_static.component import quantize_ort_static
from components.quantize_torch.component import quantize_torch
from shrink.artifact import read_meta
from tests.factories import trained_artifact

QUANTIZE = {
    "opset": 17,
    "per_channel": True,
    "parity_samples": 64,
    "calibration_samples": 32,
    "runtime": {"intra_op_threads": 1, "inter_op_threads": 1},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir, clinc_slice):
    return trained_artifact(tmp_path_factory, tiny_model_dir, clinc_slice)


@pytest.fixture(scope="module")
def chain(tmp_path_factory, trained, clinc_slice):
    """export -> optimize -> ORT dynamic, export -> ORT static, and PyTorch INT8, as in pipelines/compression.py."""
    root = tmp_path_factory.mktemp("components")
    source = Model(uri=str(trained))
    dataset = Dataset(uri=str(clinc_slice))
    out, metrics = {}, {}

    def run(name, component, **inputs):
        out[name], metrics[name] = Model(uri=str(root / name)), Metrics(uri=str(root / f"{name}-metrics"))
        component.python_func(**inputs, quantize=QUANTIZE, out=out[name], metrics=metrics[name])

    run("torch_int8", quantize_torch, model=source)
    run("onnx", export_onnx, model=source, dataset=dataset)
    run("optimized", optimize_onnx, model=out["onnx"])
    run("dynamic", quantize_ort_dynamic, model=out["optimized"])
    run("static", quantize_ort_static, model=out["onnx"], dataset=dataset)
    return source, out, metrics


@pytest.mark.parametrize(
    ("name", "parent", "technique", "fmt", "precision"),
    [
        ("torch_int8", None, "torch-dynamic-int8", "pytorch", "int8"),
        ("onnx", None, "onnx-export", "onnx", "fp32"),
        ("optimized", "onnx", "ort-optimize", "onnx", "fp32"),
        ("dynamic", "optimized", "ort-dynamic-int8", "onnx", "int8"),
        ("static", "onnx", "ort-static-int8", "onnx", "int8"),
    ],
)
def test_component_outputs_and_lineage(chain, name, parent, technique, fmt, precision):
    source, out, _ = chain
    artifact = out[name]
    meta = read_meta(artifact.path)
    assert (meta.technique, meta.format, meta.precision) == (technique, fmt, precision)
    assert artifact.metadata == {
        **artifact.metadata,
        "format": fmt,
        "precision": precision,
        "technique": technique,
        "content_hash": meta.content_hash(),
    }
    parent_artifact = source if parent is None else out[parent]
    assert meta.parent["content_hash"] == read_meta(parent_artifact.path).content_hash()
    assert meta.parent["uri"] == parent_artifact.uri
    if fmt == "onnx":
        assert meta.runtime["intra_op_threads"] == 1 and meta.runtime["execution_provider"] == "CPUExecutionProvider"


def test_component_metrics(chain):
    _, _, metrics = chain
    assert metrics["onnx"].metadata["parity_agreement"] == 1.0
    assert metrics["onnx"].metadata["parity_examples"] == 64
    assert metrics["optimized"].metadata["fused_Attention"] == 4
    assert metrics["optimized"].metadata["fusion_warnings"] == 0
    for name in ("torch_int8", "dynamic", "static"):
        assert metrics[name].metadata["compression"] > 3.3, name
    for name in ("dynamic", "static"):
        assert metrics[name].metadata["agreement_with_fp32"] >= 0.95, name
        assert metrics[name].metadata["agreement_examples"] == 64
    # The dynamic step tried every kernel with both LayerNorm forms and shows each one's figures.
    dynamic = metrics["dynamic"].metadata
    timed = [k for k in dynamic if k.startswith("p50_ms.")]
    assert len(timed) == 6 and all(dynamic[k] > 0 for k in timed)
    assert dynamic["variant_p50_ms"] in [dynamic[k] for k in timed]


def test_bad_config_exits_with_one_line(tmp_path, trained, capsys):
    with pytest.raises(SystemExit) as exc:
        quantize_torch.python_func(
            model=Model(uri=str(trained)),
            quantize={"opset": 16},
            out=Model(uri=str(tmp_path / "o")),
            metrics=Metrics(uri=str(tmp_path / "m")),
        )
    assert exc.value.code == 3  # shrink.kfp_io.EXIT_EXPECTED: a ShrinkError
    assert "error: quantize.opset: 16 is too old" in capsys.readouterr().err


def test_wrong_input_exits_with_one_line(tmp_path, chain, clinc_slice, capsys):
    _, out, _ = chain
    with pytest.raises(SystemExit) as exc:
        quantize_ort_static.python_func(
            model=out["dynamic"],
            dataset=Dataset(uri=str(clinc_slice)),
            quantize=QUANTIZE,
            out=Model(uri=str(tmp_path / "o")),
            metrics=Metrics(uri=str(tmp_path / "m")),
        )
    assert exc.value.code == 3  # shrink.kfp_io.EXIT_EXPECTED: a ShrinkError
    err = capsys.readouterr().err
    assert "already quantized to INT8" in err and "Traceback" not in err
