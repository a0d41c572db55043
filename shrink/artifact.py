"""The shrink model artifact: a directory every step reads and writes.

A directory holds the model files (Hugging Face ``save_pretrained`` safetensors,
or ``model.onnx``), the tokenizer files, the config that produced it, and
``shrink.json``: what the model is (format, precision, labels), where it came
from (parent, technique, settings, lineage) and the sha256 of every file.

Why a manifest of hashes: artifacts travel through object storage and KFP's
artifact store between containers; a truncated or tampered file must fail
loudly on load instead of serving wrong predictions. Why no pickle: a model
file must not be able to run code when it is opened, so weights are only ever
safetensors or ONNX.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shrink.errors import ShrinkError

META_FILE = "shrink.json"
FORMATS = ("pytorch", "onnx")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# Extensions that would let a file run code when loaded; refused everywhere.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so multi-GB models do not fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def hash_tree(directory: str | Path, exclude: tuple[str, ...] = (META_FILE,)) -> dict[str, str]:
    """sha256 of every regular file under ``directory``, keyed by POSIX relative path."""
    root = Path(directory)
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).as_posix() not in exclude
    }


@dataclass
class ArtifactMeta:
    """Contents of ``shrink.json``.

    ``technique`` names the step that produced the model (``fine-tune``,
    ``distill``, ``onnx-export``, ``ort-quantize-dynamic`` ...) and ``settings``
    its parameters; ``lineage`` is the chain of ancestors, oldest first, so a
    promoted model says every step between the teacher and itself.
    """

    format: str
    precision: str
    label_names: list[str]
    technique: str
    settings: dict[str, Any] = field(default_factory=dict)
    parent: dict[str, Any] | None = None
    lineage: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    created: str = ""
    shrink_version: str = ""

    @property
    def num_labels(self) -> int:
        """Number of classes the model predicts."""
        return len(self.label_names)

    def content_hash(self) -> str:
        """One sha256 over the file hashes (and the out-of-scope rule, if any): the identity of what serves.

        Why the rule: it lives in ``shrink.json`` (not a hashed file) yet changes the answers, so
        the same weights with a refitted rule must be a new model to promotion and the champion
        match. Artifacts without a rule keep the hash they always had.
        """
        ident = self.files if "oos" not in self.extra else {"files": self.files, "oos": self.extra["oos"]}
        blob = json.dumps(ident, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def as_parent(self, uri: str | None = None) -> dict[str, Any]:
        """The short reference a child artifact keeps to this one."""
        return {
            "technique": self.technique,
            "format": self.format,
            "precision": self.precision,
            "content_hash": self.content_hash(),
            "uri": uri,
        }


def _validate(meta: ArtifactMeta, where: str) -> None:
    if meta.format not in FORMATS:
        raise ShrinkError(f"{where}: unknown model format {meta.format!r} (known: {', '.join(FORMATS)})")
    if meta.precision not in PRECISIONS:
        raise ShrinkError(f"{where}: unknown precision {meta.precision!r} (known: {', '.join(PRECISIONS)})")
    if not meta.label_names or len(set(meta.label_names)) != len(meta.label_names):
        raise ShrinkError(f"{where}: label_names must be a non-empty list of distinct names")


def write_artifact(
    directory: str | Path,
    *,
    format: str,
    precision: str,
    label_names: list[str],
    technique: str,
    settings: dict[str, Any] | None = None,
    parent: ArtifactMeta | None = None,
    parent_uri: str | None = None,
    metrics: dict[str, Any] | None = None,
    runtime: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> ArtifactMeta:
    """Seal a directory of model files into an artifact by writing ``shrink.json``.

    Call it last, after every model, tokenizer and config file is in place: the
    hashes it records are what every later load checks.
    """
    from shrink import __version__

    root = Path(directory)
    if not root.is_dir():
        raise ShrinkError(f"{root}: artifact directory does not exist")
    pickled = [p.name for p in root.rglob("*") if p.suffix in PICKLE_SUFFIXES]
    if pickled:
        raise ShrinkError(f"{root}: refusing to seal pickle files {pickled}; save safetensors or ONNX")
    lineage = []
    if parent is not None:
        lineage = [*parent.lineage, parent.as_parent(parent_uri)]
    meta = ArtifactMeta(
        format=format,
        precision=precision,
        label_names=list(label_names),
        technique=technique,
        settings=dict(settings or {}),
        parent=parent.as_parent(parent_uri) if parent is not None else None,
        lineage=lineage,
        metrics=dict(metrics or {}),
        runtime=dict(runtime or {}),
        extra=dict(extra or {}),
        files=hash_tree(root),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        shrink_version=__version__,
    )
    _validate(meta, str(root / META_FILE))
    from shrink import files

    files.write_text(root / META_FILE, json.dumps(dataclasses.asdict(meta), indent=2, sort_keys=False))
    return meta


def reseal(directory: str | Path, like: ArtifactMeta) -> ArtifactMeta:
    """Seal ``directory`` again, after files in it changed, as an artifact of ``like``'s kind.

    Format, precision, labels, technique, settings, runtime and extra are ``like``'s; the
    hashes (and so the content hash) are the directory's now. For a second version of the
    same model (a hot-swap rehearsal) or a deliberately broken copy in a test.
    """
    return write_artifact(
        directory,
        format=like.format,
        precision=like.precision,
        label_names=like.label_names,
        technique=like.technique,
        settings=like.settings,
        runtime=like.runtime,
        extra=like.extra,
    )


def read_meta(directory: str | Path, verify: bool = True) -> ArtifactMeta:
    """Read ``shrink.json`` and, by default, check every file against its recorded sha256.

    A missing, extra-modified or truncated file is an error naming the file, so
    nothing downstream ever runs a model that is not the one that was measured.
    """
    root = Path(directory)
    meta_path = root / META_FILE
    if not meta_path.is_file():
        raise ShrinkError(f"{root}: not a shrink artifact ({META_FILE} is missing)")
    from shrink import files

    raw = files.read_json(meta_path)
    known = {f.name for f in dataclasses.fields(ArtifactMeta)}
    if not isinstance(raw, dict) or not {"format", "precision", "label_names", "technique"} <= set(raw):
        raise ShrinkError(f"{meta_path}: missing format, precision, label_names or technique")
    meta = ArtifactMeta(**{k: v for k, v in raw.items() if k in known})
    _validate(meta, str(meta_path))
    if verify:
        verify_files(root, meta)
    return meta


def verify_files(directory: str | Path, meta: ArtifactMeta) -> None:
    """Raise if any recorded file is missing or its sha256 differs."""
    root = Path(directory)
    if not meta.files:
        raise ShrinkError(f"{root / META_FILE}: records no files")
    for rel, expected in meta.files.items():
        path = root / rel
        if not path.is_file():
            raise ShrinkError(f"{path}: listed in {META_FILE} but missing")
        from shrink import files

        with files.guarded(path):
            actual = sha256_file(path)
        if actual != expected:
            raise ShrinkError(
                f"{path}: sha256 mismatch (expected {expected[:12]}…, found {actual[:12]}…); corrupt or tampered"
            )


def model_files(directory: str | Path, meta: ArtifactMeta) -> dict[str, int]:
    """Bytes on disk of the files that hold weights (not tokenizer or metadata), for size reports."""
    root = Path(directory)
    weight_suffixes = (".safetensors", ".onnx", ".data", ".zst")
    return {rel: (root / rel).stat().st_size for rel in meta.files if rel.endswith(weight_suffixes)}
