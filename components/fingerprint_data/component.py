"""KFP component: the fingerprint of the data at the configured source, taken on every run (never cached)."""

from kfp import dsl


@dsl.component(base_image="shrink-fingerprint-data", install_kfp_package=False)
def fingerprint_data(data: dict) -> str:
    """Hash the files (or list the S3 ETags and sizes, or read the hub revision) behind ``data.source``.

    Its output is a parameter of ``prepare_data`` and so part of that step's cache key: new
    data at an unchanged source is prepared again, and everything downstream recomputed;
    unchanged data reuses every cached step (see ``shrink/fingerprint.py``).

    Args:
        data: The ``data`` section of the pipeline config; only ``source`` is read.

    Returns:
        The sha256 hex digest of the source's contents.
    """
    from shrink.config import DataConfig, from_dict
    from shrink.fingerprint import fingerprint_source
    from shrink.kfp_io import component_main
    from shrink.logs import log

    with component_main("fingerprint_data"):
        cfg = from_dict(DataConfig, data, "data")
        found = fingerprint_source(cfg.source)
        log.info(
            "%s: %d %s, %d bytes, fingerprint %s", cfg.source, found.objects, found.kind, found.bytes, found.digest
        )
        return found.digest
