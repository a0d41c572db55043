"""KFP component: ONNX Runtime static INT8 (QDQ), calibrated on training texts."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output


@dsl.component(base_image="shrink-quantize-ort-static", install_kfp_package=False)
def quantize_ort_static(
    model: Input[Model], dataset: Input[Dataset], quantize: dict, out: Output[Model], metrics: Output[Metrics]
):
    """Calibrate activation ranges on training texts and write a QDQ INT8 model.

    Args:
        model: An ONNX FP32 artifact (best: the plain export; fused ops have no QDQ form).
        dataset: The prepared dataset; ``quantize.calibration_samples`` training texts calibrate.
        quantize: The ``quantize`` section of the pipeline config (calibration method and samples).
        out: The ONNX INT8 (QDQ) artifact, parent = ``model``.
        metrics: File size (MB), compression, argmax agreement with PyTorch FP32 on the parity slice.
    """
    from shrink.config import QuantizeConfig, from_dict
    from shrink.kfp_io import component_main, publish_model
    from shrink.quantize import calibration_texts
    from shrink.quantize import quantize_ort_static as run

    with component_main("quantize_ort_static", metrics):
        cfg = from_dict(QuantizeConfig, quantize, "quantize")
        texts = calibration_texts(dataset.path, cfg.calibration_samples)
        meta = run(model.path, out.path, cfg, texts, parent_uri=model.uri)
        publish_model(meta, out, metrics)
