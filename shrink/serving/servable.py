"""Can the serving runtime load this artifact and answer with it? Asked before a model is promoted.

The gate chooses among candidates by their benchmark records; a candidate the
server cannot load (a format or loader the serving image lacks, a tokenizer
without a pad token, logits of the wrong shape) must not be promoted, or the
promotion ends in a crash-looping deployment. The check goes through the very
code the server runs for each version: :class:`~shrink.serving.answers.LoadedModel`
(files verified, ``open_classifier``, warm-up at batch 1 and a full batch) and
one request's answers, checked against the artifact's labels. It needs neither
KServe nor a socket, so it runs in the gate's image.
"""

from __future__ import annotations

from pathlib import Path

from shrink.artifact import read_meta
from shrink.errors import ShrinkError
from shrink.serving.answers import WARMUP_TEXTS, LoadedModel, version_of
from shrink.serving.manifest import MODEL_FORMATS


def check_servable(model_dir: str | Path, max_batch_size: int = 8, threads: int | None = 1) -> None:
    """Raise ShrinkError naming the problem when the server could not serve ``model_dir``.

    Args:
        model_dir: A sealed shrink artifact (a candidate the gate may promote).
        max_batch_size: The batch the warm-up runs besides batch 1.
        threads: Intra-op threads for the check (the server's default is 1).
    """
    where = f"{model_dir}: not servable"
    try:
        meta = read_meta(model_dir)
        if meta.format not in MODEL_FORMATS:
            raise ShrinkError(f"format {meta.format!r} has no serving runtime (served: {', '.join(MODEL_FORMATS)})")
        model = LoadedModel(model_dir, version_of(model_dir, meta), threads=threads, max_batch_size=max_batch_size)
        answers = model.answer(list(WARMUP_TEXTS))
    except ShrinkError as exc:
        raise ShrinkError(f"{where}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - whatever a loader raises, the gate needs one line
        raise ShrinkError(f"{where}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    bad = [a for a in answers if a.label not in meta.label_names or not 0.0 <= a.score <= 1.0]
    if len(answers) != len(WARMUP_TEXTS) or bad:
        raise ShrinkError(
            f"{where}: answered {len(answers)} of {len(WARMUP_TEXTS)} texts, {len(bad)} outside its "
            "labels or with a score outside [0, 1]"
        )
