"""Third-party load errors (safetensors, tokenizers, JSON) become one ShrinkError naming the file."""

import shutil

import pytest

from shrink.errors import ShrinkError


@pytest.fixture
def model_copy(tmp_path, tiny_model_dir):
    out = tmp_path / "model"
    shutil.copytree(tiny_model_dir, out)
    return out


@pytest.mark.parametrize("damage", [lambda b: b[:1000], lambda b: b"not safetensors at all"])
def test_truncated_or_malformed_safetensors(model_copy, damage):
    from shrink.models import load_classifier

    weights = model_copy / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    with pytest.raises(ShrinkError, match=r"model.safetensors: cannot load safetensors weights \(.*\); the file is"):
        load_classifier(model_copy)


def test_truncated_tokenizer(model_copy):
    from shrink.models import load_tokenizer

    tok = model_copy / "tokenizer.json"
    tok.write_text(tok.read_text()[:500])
    with pytest.raises(ShrinkError, match=r"model: cannot load the tokenizer"):
        load_tokenizer(model_copy)


def test_malformed_config_json_when_reading_labels(model_copy):
    from shrink.models import read_label_names

    (model_copy / "config.json").write_text('{"id2label": {"0": "a"}, "id2label": {}}')
    with pytest.raises(ShrinkError, match=r"config.json: duplicate key 'id2label'"):
        read_label_names(model_copy)


def test_artifact_meta_not_json(tiny_artifact, tmp_path):
    from shrink.artifact import read_meta

    copy = tmp_path / "artifact"
    shutil.copytree(tiny_artifact, copy)
    (copy / "shrink.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(ShrinkError, match=r"shrink.json: not UTF-8"):
        read_meta(copy)
