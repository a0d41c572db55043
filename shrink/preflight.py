"""What the config alone decides, checked before the first step runs.

Why here and not in the steps: a student layer beyond the teacher's depth used to be
found by the distillation step, after the teacher had trained and its logits had been
computed; ``shrink compile`` accepted it. Every check below needs only the config and
files on this machine (a base model's ``config.json``, a data directory), so ``shrink
run``, ``compile``, ``submit`` and ``schedule`` share them and fail in a second.

What cannot be decided here (the data's labels against a teacher checkpoint's, a
source on ``s3://`` or the hub) is still checked by the step that reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shrink.errors import ShrinkError

_REMOTE = ("s3://", "hf:")


def _local(spec: str | None) -> Path | None:
    """``spec`` as a local path, or None for remote references and installed model packages."""
    from shrink.models import MODEL_PACKAGES

    if not spec or spec.startswith(_REMOTE) or spec in MODEL_PACKAGES:
        return None
    return Path(spec)


def teacher_depth(spec: str | None) -> tuple[int, str] | None:
    """(number of encoder layers, where it was read) of a model known on this machine, else None.

    Known: an installed model package or a local directory with ``config.json``. Remote
    models (``s3://``, ``hf:``) are not fetched for this; their step checks the layers.
    """
    from shrink import files
    from shrink.models import MODEL_PACKAGES, resolve_model_dir

    if not spec or spec.startswith(_REMOTE):
        return None
    if spec in MODEL_PACKAGES:
        try:
            directory = resolve_model_dir(spec)
        except ShrinkError:
            return None  # not installed here; the step's image has it
    else:
        directory = Path(spec)
    config_path = directory / "config.json"
    if not config_path.is_file():
        return None
    config: Any = files.read_json(config_path)
    depth = config.get("num_hidden_layers") if isinstance(config, dict) else None
    return (depth, str(config_path)) if isinstance(depth, int) and depth > 0 else None


def check(cfg, where: str, local: bool = True) -> None:
    """Raise the first problem the config alone shows, naming the key and the file.

    Args:
        cfg: A loaded ``PipelineConfig``.
        where: The config file, for messages.
        local: The pipeline runs on this machine (``shrink run``), so local paths in the
            config must exist here. On a cluster a path may name a volume in the pod, so
            ``compile``, ``submit`` and ``schedule`` do not require it.
    """
    if local:
        for key, spec in (
            ("data.source", cfg.data.source),
            ("teacher.checkpoint", cfg.teacher.checkpoint),
            ("teacher.base_model", None if cfg.teacher.checkpoint else cfg.teacher.base_model),
            ("distill.student_checkpoint", cfg.distill.student_checkpoint),
        ):
            path = _local(spec)
            if path is not None and not path.exists():
                raise ShrinkError(f"{where}: {key}: {path} does not exist")
    if cfg.distill.student_checkpoint is None:
        teacher = cfg.teacher.checkpoint or cfg.teacher.base_model
        known = teacher_depth(teacher)
        if known is not None:
            depth, source = known
            beyond = sorted(i for i in cfg.distill.student_layers if i >= depth)
            if beyond:
                raise ShrinkError(
                    f"{where}: distill.student_layers: {beyond} beyond the teacher's {depth} layers "
                    f"(0-{depth - 1}, from {source})"
                )
            if len(cfg.distill.student_layers) > depth:
                raise ShrinkError(f"{where}: distill.student_layers: more layers than the teacher's {depth}")
            deeper = sorted(d for d in cfg.distill.search.depth if d > depth)
            if deeper:
                raise ShrinkError(
                    f"{where}: distill.search.depth: {deeper} deeper than the teacher's {depth} layers (from {source})"
                )
    if local and cfg.oos.enabled is True and not cfg.data.labels and _local(cfg.data.source) is not None:
        # ``data.labels`` given: PipelineConfig.check has compared them already. Remote data: the step that reads it.
        from shrink.data import label_names

        cfg.oos.active(label_names(cfg.data), f"{where}: oos")
    trials = cfg.distill.search.trials()
    if len({tuple(sorted(t.items())) for t in trials}) != len(trials):
        raise ShrinkError(f"{where}: distill.search: a value repeats, so two trials would be the same run")
