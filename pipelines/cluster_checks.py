"""Checks of a cluster submission that need no cluster: placement, the package, the parameters, the schedule.

``pipelines/submit.py`` runs every one of them before its first request, so a
bad config, a wrong file, a misspelt parameter or a malformed cron expression
fails in a second, with the key or file named, and creates nothing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import shrink
from shrink.config import PipelineConfig
from shrink.errors import ShrinkError


def validate_placement(cfg: PipelineConfig) -> None:
    """Refuse a placement that would put the training steps on nodes without a GPU.

    Distillation always trains (and so do teacher fine-tuning and pruning when
    configured); on a pool without an accelerator they would either never be
    scheduled or crawl on CPU for hours. Caught here, before compiling or
    submitting, the error names the config key to fix.
    """
    gpu = cfg.placement.gpu
    steps = ["distillation"]
    if not cfg.teacher.checkpoint:
        steps.insert(0, "teacher fine-tuning")
    if cfg.prune.enabled:
        steps.append("pruning")
    what = ", ".join(steps)
    if not (gpu.accelerator_type or "").strip():
        raise ShrinkError(
            f"placement.gpu.accelerator_type is empty, but {what} run on that pool: name the node pool's GPU "
            "resource (e.g. nvidia.com/gpu) and set placement.gpu.accelerator_limit >= 1"
        )
    if gpu.accelerator_limit < 1:
        raise ShrinkError(
            f"placement.gpu.accelerator_limit is {gpu.accelerator_limit}, but {what} need a GPU: "
            f"set it to at least 1 ({gpu.accelerator_type} per pod)"
        )
    for name in ("cpu", "benchmark"):
        other = getattr(cfg.placement, name).node_selector
        if gpu.node_selector and gpu.node_selector == other:
            raise ShrinkError(
                f"placement.gpu.node_selector {gpu.node_selector} selects the same nodes as "
                f"placement.{name}: {what} would wait for a GPU that pool does not have; "
                "select the GPU node pool"
            )


@dataclass
class Package:
    """A compiled pipeline (KFP IR YAML) and what submit needs to know about it."""

    path: Path
    name: str
    digest: str
    inputs: dict[str, dict[str, Any]]
    source: str = ""

    def __post_init__(self) -> None:
        self.source = self.source or str(self.path)

    @property
    def default_version(self) -> str:
        """Package version + content hash: resubmitting the same package reuses its version."""
        return f"{shrink.__version__}-{self.digest[:12]}"


def load_package(path: str | Path, source: str | None = None) -> Package:
    """Read a compiled pipeline and check that it is one, so a wrong file fails before any upload."""
    path = Path(path)
    if not path.is_file():
        raise ShrinkError(f"{path}: pipeline package not found (compile one with `shrink compile`)")
    raw = path.read_bytes()
    try:
        docs = [d for d in yaml.safe_load_all(raw) if d is not None]
    except yaml.YAMLError as exc:
        message = f"{path}: not a compiled KFP pipeline (invalid YAML: {exc})"
        raise ShrinkError(message.replace("\n", " ")) from None
    spec = docs[0] if docs else None
    if not isinstance(spec, dict) or "root" not in spec or not isinstance(spec.get("pipelineInfo"), dict):
        raise ShrinkError(
            f"{path}: not a compiled KFP pipeline (no pipelineInfo/root); compile it with `shrink compile`"
        )
    name = spec["pipelineInfo"].get("name") or path.stem
    inputs = ((spec.get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {}
    digest = hashlib.sha256(raw).hexdigest()
    return Package(path=path, name=name, digest=digest, inputs=inputs, source=source or "")


def package_of(pipeline: str | Path | Callable, workdir: Path) -> Package:
    """The package of a compiled pipeline file, or of a pipeline function compiled into ``workdir``."""
    if callable(pipeline) and not isinstance(pipeline, str | Path):
        from kfp import compiler

        out = workdir / "pipeline.yaml"
        compiler.Compiler().compile(pipeline, package_path=str(out))
        return load_package(out, source=f"pipeline function {getattr(pipeline, 'name', None) or pipeline}")
    return load_package(pipeline)


_PARAM_TYPES: dict[str, tuple[type, ...]] = {
    "STRING": (str,),
    "NUMBER_INTEGER": (int,),
    "NUMBER_DOUBLE": (int, float),
    "BOOLEAN": (bool,),
    "STRUCT": (dict,),
    "LIST": (list, tuple),
}


def check_params(package: Package, params: dict[str, Any] | None) -> dict[str, Any]:
    """Check run parameters against the pipeline's inputs (names, required ones, types)."""
    params = dict(params or {})
    known = package.inputs
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ShrinkError(
            f"{package.source}: pipeline {package.name!r} has no parameter {unknown[0]!r} "
            f"(parameters: {', '.join(sorted(known)) or 'none'})"
        )
    missing = sorted(
        k for k, spec in known.items() if k not in params and "defaultValue" not in spec and not spec.get("isOptional")
    )
    if missing:
        raise ShrinkError(
            f"{package.source}: pipeline {package.name!r} needs parameter {missing[0]!r} (it has no default)"
        )
    for key, value in params.items():
        kind = known[key].get("parameterType", "")
        allowed = _PARAM_TYPES.get(kind)
        wrong_bool = isinstance(value, bool) and kind in ("NUMBER_INTEGER", "NUMBER_DOUBLE")
        if allowed and (not isinstance(value, allowed) or wrong_bool):
            raise ShrinkError(
                f"parameter {key!r} of pipeline {package.name!r} must be {kind.lower().replace('_', ' ')}, "
                f"got {type(value).__name__} {value!r}"[:300]
            )
    return params


def kfp_cron(cron: str) -> str:
    """KFP schedules take six cron fields (seconds first); accept the usual five as well."""
    fields = cron.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6 or not all(re.fullmatch(r"[0-9A-Za-z*/,?LW#-]+", f) for f in fields):
        raise ShrinkError(
            f"cron {cron!r}: expected 5 fields (minute hour day month weekday, e.g. '0 3 * * 1') "
            "or KFP's 6 (seconds first)"
        )
    return " ".join(fields)
