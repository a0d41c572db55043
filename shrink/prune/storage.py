"""Sealing a pruned model as a shrink artifact, its weights in :mod:`shrink.sparse`'s compact format.

The format and its loader stay in :mod:`shrink.sparse`: artifacts name that
loader (``extra.loader``) in their metadata, and serving and the benchmark read
pruned models through it without the training code here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from shrink.artifact import ArtifactMeta, write_artifact
from shrink.config import PruneConfig, save_yaml
from shrink.sparse import LOADER, WEIGHTS_FILE, dense_bytes, save_weights


def save_pruned(
    model: nn.Module,
    tokenizer,
    out_dir: str | Path,
    cfg: PruneConfig,
    *,
    label_names: list[str],
    technique: str,
    settings: dict[str, Any],
    parent: ArtifactMeta | None,
    metrics: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> ArtifactMeta:
    """Seal a pruned model as a shrink artifact: config, tokenizer, compact weights, prune.yaml."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.to("cpu")
    model.config.id2label = dict(enumerate(label_names))
    model.config.label2id = {n: i for i, n in enumerate(label_names)}
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    state = model.state_dict()
    stored = save_weights(state, out / WEIGHTS_FILE)
    save_yaml(cfg, out / "prune.yaml")
    metrics = {**metrics, "weights_bytes": stored, "dense_weights_bytes": dense_bytes(state)}
    return write_artifact(
        out,
        format="pytorch",
        precision="fp32",
        label_names=label_names,
        technique=technique,
        settings=settings,
        parent=parent,
        metrics=metrics,
        extra={"loader": LOADER, "weights_file": WEIGHTS_FILE, **(extra or {})},
    )
