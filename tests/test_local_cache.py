"""A second local run reuses cached steps (what makes `make demo` idempotent)."""

from kfp import dsl, local

from components.prepare_data.component import prepare_data
from tests.factories import SLICE_LABELS


@dsl.pipeline
def only_data(data: dict) -> dsl.Dataset:
    return prepare_data(data=data).outputs["dataset"]


def test_second_run_hits_the_cache(tmp_path, clinc_dir):
    data = {"source": str(clinc_dir), "labels": SLICE_LABELS[:3], "max_per_class": 5}
    uris = []
    for run in ("first", "second"):
        local.init(
            runner=local.SubprocessRunner(use_venv=False),
            pipeline_root=str(tmp_path / run),
            enable_caching=True,
            cache_root=str(tmp_path / "cache"),
        )
        uris.append(only_data(data=data).output.uri)
    assert uris[0].startswith(str(tmp_path / "first"))
    assert uris[1] == uris[0], "the second run recomputed a cached step"
