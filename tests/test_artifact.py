import json

import pytest

from shrink.artifact import read_meta, write_artifact
from shrink.errors import ShrinkError
from shrink.models import check_labels, load_pytorch_artifact, resolve_model_dir, save_classifier
from shrink.runtime import open_classifier


@pytest.fixture
def sealed(tmp_path, tiny_model_dir):
    from shrink.models import load_classifier, load_tokenizer

    model = load_classifier(tiny_model_dir)
    meta = save_classifier(
        model,
        load_tokenizer(tiny_model_dir),
        tmp_path / "art",
        label_names=list(model.config.id2label.values()),
        technique="test",
        settings={"k": 1},
    )
    return tmp_path / "art", meta


def test_seal_and_verify(sealed):
    path, meta = sealed
    assert "model.safetensors" in meta.files and "tokenizer.json" in meta.files
    again = read_meta(path)
    assert again.content_hash() == meta.content_hash()
    model, tok, _ = load_pytorch_artifact(path)
    assert model.config.num_labels == len(meta.label_names)


def test_tampered_file_is_refused(sealed):
    path, _ = sealed
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ShrinkError, match="model.safetensors: sha256 mismatch"):
        read_meta(path)
    with pytest.raises(ShrinkError, match="sha256 mismatch"):
        open_classifier(path)


def test_missing_and_malformed_meta(tmp_path, sealed):
    path, _ = sealed
    (path / "tokenizer.json").unlink()
    with pytest.raises(ShrinkError, match="tokenizer.json: listed in shrink.json but missing"):
        read_meta(path)
    (path / "shrink.json").write_text("{")
    with pytest.raises(ShrinkError, match="shrink.json: not valid JSON"):
        read_meta(path)
    with pytest.raises(ShrinkError, match="not a shrink artifact"):
        read_meta(tmp_path)


def test_pickle_is_refused(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ShrinkError, match="refusing to seal pickle files"):
        write_artifact(tmp_path, format="pytorch", precision="fp32", label_names=["a"], technique="t")


def test_lineage_chains(sealed, tmp_path):
    path, parent = sealed
    child_dir = tmp_path / "child"
    child_dir.mkdir()
    (child_dir / "model.onnx").write_bytes(b"onnx")
    child = write_artifact(
        child_dir,
        format="onnx",
        precision="fp32",
        label_names=parent.label_names,
        technique="onnx-export",
        parent=parent,
    )
    assert child.parent["content_hash"] == parent.content_hash()
    assert [step["technique"] for step in child.lineage] == ["test"]
    assert json.loads((child_dir / "shrink.json").read_text())["parent"]["technique"] == "test"


def test_runtime_predicts(sealed):
    path, meta = sealed
    clf = open_classifier(path)
    preds = clf.predict(["what is my balance", "play some jazz"])
    assert preds.shape == (2,) and all(0 <= p < len(meta.label_names) for p in preds)


def test_model_references(minilm_dir, tmp_path):
    assert (minilm_dir / "model.safetensors").is_file()
    with pytest.raises(ShrinkError, match="no such model directory"):
        resolve_model_dir(str(tmp_path / "nope"))
    (tmp_path / "cfg").mkdir()
    with pytest.raises(ShrinkError, match="config.json is missing"):
        resolve_model_dir(str(tmp_path / "cfg"))


def test_label_mismatch_is_explained():
    with pytest.raises(ShrinkError, match="1 dataset labels it lacks"):
        check_labels(["a", "b"], ["a", "b", "c"], "teacher", "dataset")
    with pytest.raises(ShrinkError, match="different order"):
        check_labels(["b", "a"], ["a", "b"], "teacher", "dataset")
