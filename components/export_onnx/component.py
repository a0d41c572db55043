"""KFP component: export a PyTorch classifier to ONNX and check parity on validation texts."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output


@dsl.component(base_image="shrink-export-onnx", install_kfp_package=False)
def export_onnx(
    model: Input[Model], dataset: Input[Dataset], quantize: dict, out: Output[Model], metrics: Output[Metrics]
):
    """Export to ONNX (dynamic batch and sequence axes); fail unless every parity prediction matches.

    Args:
        model: A PyTorch FP32 classifier artifact.
        dataset: The prepared dataset; ``quantize.parity_samples`` validation texts are the parity slice.
        quantize: The ``quantize`` section of the pipeline config (opset, parity_samples, runtime).
        out: The ONNX FP32 artifact with the runtime settings and the parity reference, parent = ``model``.
        metrics: Parity max abs logit difference and argmax agreement, file size (MB).
    """
    from shrink.config import QuantizeConfig, from_dict
    from shrink.kfp_io import component_main, publish_model
    from shrink.onnx_export import export_onnx as run
    from shrink.onnx_export import parity_texts

    with component_main("export_onnx", metrics):
        cfg = from_dict(QuantizeConfig, quantize, "quantize")
        texts = parity_texts(dataset.path, cfg.parity_samples)
        meta = run(model.path, out.path, cfg, texts, parent_uri=model.uri)
        publish_model(meta, out, metrics)
