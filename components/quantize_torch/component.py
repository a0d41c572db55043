"""KFP component: PyTorch dynamic INT8 of a classifier artifact (weights as int8 safetensors)."""

from kfp import dsl
from kfp.dsl import Input, Metrics, Model, Output


@dsl.component(base_image="shrink-quantize-torch", install_kfp_package=False)
def quantize_torch(model: Input[Model], quantize: dict, out: Output[Model], metrics: Output[Metrics]):
    """Quantize every Linear (and the embeddings) of a PyTorch classifier to INT8.

    Args:
        model: A PyTorch FP32 classifier artifact (teacher or student).
        quantize: The ``quantize`` section of the pipeline config (embeddings, layers kept FP32).
        out: The INT8 artifact (safetensors; loader ``shrink.quantize:load_torch_int8``), parent = ``model``.
        metrics: Weight-file size (MB) and compression against the parent.
    """
    from shrink.config import QuantizeConfig, from_dict
    from shrink.kfp_io import component_main, publish_model
    from shrink.quantize import quantize_torch_dynamic

    with component_main("quantize_torch", metrics):
        cfg = from_dict(QuantizeConfig, quantize, "quantize")
        meta = quantize_torch_dynamic(model.path, out.path, cfg, parent_uri=model.uri)
        publish_model(meta, out, metrics)
