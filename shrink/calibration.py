"""Fit an artifact's out-of-scope rule on its validation split, through the code path that serves it.

The benchmark step calls :func:`calibrate` for every candidate, teacher included, and
then measures the calibrated copy: the artifact the gate judges is the artifact that is
promoted, and goals relative to the teacher compare calibrated with calibrated. The
rule itself, its fitting and its application are :mod:`shrink.oos`; this module only
runs the model (:func:`shrink.runtime.open_classifier`) and writes the copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from shrink.artifact import META_FILE, read_meta
from shrink.oos import OosRule, fit_rule, write_rule

if TYPE_CHECKING:
    from shrink.config import OosConfig


def validation_logits(model_dir: str | Path, texts: list[str], threads: int | None = 1, batch_size: int = 64):
    """Raw logits of ``texts`` through :func:`shrink.runtime.open_classifier`, the served code path.

    Batches group texts of similar length, as the benchmark's accuracy batches do (a
    dynamically quantized model sees padding in its activation ranges), and come back in
    the texts' order.
    """
    from shrink.runtime import open_classifier

    clf = open_classifier(model_dir, threads=threads)
    order = sorted(range(len(texts)), key=lambda k: (len(texts[k]), k))
    _, logits = clf.predict_all([texts[k] for k in order], batch_size=batch_size)
    out = np.empty_like(logits)
    out[order] = logits
    return out


def calibrate(
    model_dir: str | Path,
    dataset_dir: str | Path,
    out_dir: str | Path,
    cfg: OosConfig,
    threads: int | None = 1,
    batch_size: int = 64,
    where: str = "oos",
) -> OosRule | None:
    """Copy an artifact to ``out_dir`` with the rule of ``cfg`` fitted on the dataset's validation split.

    When the rule is off for these labels (``enabled: auto`` without the label, or
    ``false``), ``out_dir`` is the artifact without any rule: a rule the input carried
    from elsewhere is not this run's and is taken out. Returns the rule, or None.

    Raises:
        ShrinkError: the artifact's labels differ from the dataset's, ``enabled: true``
            names a label the data lacks, or the validation split has no out-of-scope
            example to tune on.
    """
    from shrink.data import load_prepared
    from shrink.logs import log
    from shrink.models import check_labels

    src, out = Path(model_dir), Path(out_dir)
    meta = read_meta(src)
    dd, info = load_prepared(dataset_dir)
    check_labels(meta.label_names, info.label_names, str(src / META_FILE), str(dataset_dir))
    active = cfg.active(meta.label_names, where)  # before anything is written: a refused config leaves no copy
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out)
    if not active:
        log.info("oos: no rejection rule (%s)", f"no {cfg.label!r} label" if cfg.enabled == "auto" else "disabled")
        write_rule(out, None)
        return None
    val = dd["validation"]
    labels = np.asarray(val["label"], dtype=np.int64)
    logits = validation_logits(src, list(val["text"]), threads=threads, batch_size=batch_size)
    rule = fit_rule(logits, labels, meta.label_names.index(cfg.label), cfg, where)
    write_rule(out, rule)
    v = rule.validation
    log.info(
        "oos: %s < %s on %d validation examples (%d oos, tuned for share %.3f): weighted accuracy %.4f -> %.4f",
        rule.rule,
        "none" if rule.threshold is None else f"{rule.threshold:.4g}",
        v["examples"],
        v["oos_examples"],
        rule.expected_oos_share,
        v["raw"]["weighted_accuracy"],
        v["weighted_accuracy"],
    )
    return rule
