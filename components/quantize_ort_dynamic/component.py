"""KFP component: ONNX Runtime dynamic INT8 of an ONNX classifier."""

from kfp import dsl
from kfp.dsl import Input, Metrics, Model, Output


@dsl.component(base_image="shrink-quantize-ort-dynamic", install_kfp_package=False)
def quantize_ort_dynamic(model: Input[Model], quantize: dict, out: Output[Model], metrics: Output[Metrics]):
    """Quantize MatMul / Attention weights and the embeddings to INT8, keeping the fastest variant within budget.

    Args:
        model: An ONNX FP32 artifact (best: the optimized one from optimize_onnx).
        quantize: The ``quantize`` section of the pipeline config (matmul_kernel, search, per_channel, embeddings).
        out: The ONNX INT8 artifact of the winning variant, parent = ``model``.
        metrics: File size (MB), compression, argmax agreement with PyTorch FP32 on the parity slice, and every
            variant's step p50 (ms), agreement and size.
    """
    from shrink.config import QuantizeConfig, from_dict
    from shrink.kfp_io import component_main, publish_model
    from shrink.quantize import quantize_ort_dynamic as run

    with component_main("quantize_ort_dynamic", metrics):
        cfg = from_dict(QuantizeConfig, quantize, "quantize")
        meta = run(model.path, out.path, cfg, parent_uri=model.uri)
        publish_model(meta, out, metrics)
