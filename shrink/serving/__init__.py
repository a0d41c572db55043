"""Serving: the promoted model answers raw texts over KServe's protocols.

``shrink serve`` runs :class:`~shrink.serving.predictor.ShrinkPredictor` (a
``kserve.Model``) under ``kserve.ModelServer``; see ``server.py`` for what is
added to KServe and why. The pieces that do not need KServe (the loaded model
and its answers, the cache, the batcher, the model sources, the servability
check and the cluster manifests) import without it, so the gate and the promote
step can use them in images that do not carry the server.
"""

from __future__ import annotations

from typing import Any

# Public names, imported on first use: ``import shrink.serving`` stays light and KServe-free.
_EXPORTS = {
    "ServeConfig": "shrink.serving.config",
    "check_servable": "shrink.serving.servable",
    "serve": "shrink.serving.server",
    "inference_service": "shrink.serving.manifest",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'shrink.serving' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
