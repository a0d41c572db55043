"""KFP component: fuse an ONNX BERT-class graph with the ONNX Runtime transformers optimizer."""

from kfp import dsl
from kfp.dsl import Input, Metrics, Model, Output


@dsl.component(base_image="shrink-optimize-onnx", install_kfp_package=False)
def optimize_onnx(model: Input[Model], quantize: dict, out: Output[Model], metrics: Output[Metrics]):
    """Fuse Attention, SkipLayerNormalization, Gelu and EmbedLayerNormalization; check predictions unchanged.

    Args:
        model: An ONNX FP32 artifact from export_onnx.
        quantize: The ``quantize`` section of the pipeline config (runtime settings).
        out: The fused ONNX FP32 artifact (missing fusions listed in ``extra.warnings``), parent = ``model``.
        metrics: Count of each fused operator, number of fusion warnings, agreement with PyTorch FP32.
    """
    from shrink.config import QuantizeConfig, from_dict
    from shrink.kfp_io import component_main, publish_model
    from shrink.onnx_export import optimize_onnx as run

    with component_main("optimize_onnx", metrics):
        cfg = from_dict(QuantizeConfig, quantize, "quantize")
        meta = run(model.path, out.path, cfg, parent_uri=model.uri)
        publish_model(meta, out, metrics)
        out.metadata["warnings"] = meta.extra.get("warnings", [])
