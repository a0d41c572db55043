"""KFP component: turn the configured data source into the canonical Dataset artifact."""

from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output


@dsl.component(base_image="shrink-prepare-data", install_kfp_package=False)
def prepare_data(data: dict, dataset: Output[Dataset], metrics: Output[Metrics], fingerprint: str = ""):
    """Load CLINC150 JSON, CSV, hf: or saved data (also under s3://) into train/validation/test.

    Args:
        data: The ``data`` section of the pipeline config (source, label subset, examples per class).
        fingerprint: The source's fingerprint from ``fingerprint_data``: part of this step's cache
            key, so new data at the same source is prepared again (``shrink/fingerprint.py``).
            Checked against the data read; recorded in the dataset's metadata and ``shrink-data.json``.
        dataset: The canonical DatasetDict (save_to_disk) with ``shrink-data.json``.
        metrics: Example counts per split and the number of labels.
    """
    from shrink.config import DataConfig, from_dict
    from shrink.data import prepare
    from shrink.kfp_io import component_main

    with component_main("prepare_data", metrics):
        info = prepare(from_dict(DataConfig, data, "data"), dataset.path, expected_fingerprint=fingerprint or None)
        dataset.metadata.update(
            {
                "labels": len(info.label_names),
                "fingerprint": info.source_fingerprint,
                **{f"{s}_examples": n for s, n in info.counts.items()},
            }
        )
        for split, n in info.counts.items():
            metrics.log_metric(f"{split}_examples", n)
        metrics.log_metric("labels", len(info.label_names))
