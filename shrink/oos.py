"""Out-of-scope rejection as part of the model: a confidence rule tuned on validation, stored in ``shrink.json``.

Why: a classifier trained with ``oos`` as one more class catches only about half of the
out-of-scope queries (CLINC150's authors found the same, Larson et al. 2019); many of the
rest are predicted as some intent with low confidence. A rejection rule ("below this
confidence, answer ``oos``") recovers much of that for almost no in-scope accuracy. It
is only worth having if everything that judges or serves the model sees the same
decisions, so the rule travels with the artifact (``extra["oos"]`` of ``shrink.json``)
and :mod:`shrink.runtime` applies it: the benchmark, the gate and serving all read
``Classifier.predict``.

Two confidence scores, both from the logits alone (so every format, ONNX included,
has them): the top softmax probability (Hendrycks & Gimpel 2017; the oos-threshold
baseline of Larson et al.), and the energy score ``logsumexp(logits)`` (Liu et al.
2020: the negative free energy at temperature 1, which does not saturate the way a
probability does). A query is rejected when its score is below the threshold.

The threshold maximises accuracy on the validation split with the out-of-scope
examples reweighted to the share of out-of-scope traffic the deployment expects
(``expected_oos_share``; by default the validation split's own share, i.e. plain
accuracy). The share matters: CLINC150's validation split is 3% out of scope, its test
split 18%, and a threshold tuned for 3% rejects too little for 18%. Nothing here looks at
the test split.

The functions take numpy arrays, but for :func:`write_rule`, which puts a rule into an
artifact; fitting one on an artifact's validation split is :func:`shrink.calibration.calibrate`
(it runs the model through :mod:`shrink.runtime`, which imports this module).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shrink.artifact import META_FILE, ArtifactMeta, read_meta
from shrink.errors import ShrinkError

if TYPE_CHECKING:
    from shrink.config import OosConfig

RULES = ("max_softmax", "energy")
EXTRA_KEY = "oos"  # where the rule lives in shrink.json's ``extra``


# --------------------------------------------------------------------------- scores


def max_softmax(logits: np.ndarray) -> np.ndarray:
    """The top softmax probability of each row: in (0, 1], low means unsure."""
    x = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    return 1.0 / shifted.sum(axis=-1)  # the top class's shifted term is exp(0) = 1


def energy(logits: np.ndarray) -> np.ndarray:
    """``logsumexp`` of each row (the negative free energy, T = 1): low means unlike the training data."""
    x = np.asarray(logits, dtype=np.float64)
    top = x.max(axis=-1)
    return top + np.log(np.exp(x - top[..., None]).sum(axis=-1))


SCORES = {"max_softmax": max_softmax, "energy": energy}


# --------------------------------------------------------------------------- the stored rule


@dataclass(frozen=True)
class OosRule:
    """A fitted rejection rule, as stored in ``shrink.json`` ``extra["oos"]``.

    ``threshold`` None means the rule was fitted and no threshold helped on validation:
    the model answers its argmax. ``label_id`` is ``label``'s index in the artifact's
    labels (checked when read). ``expected_oos_share`` is the out-of-scope share the
    threshold was tuned for, ``share_from`` whether it was ``declared`` in the config or
    the ``validation`` split's own; ``fixed`` when the threshold came from the config.
    ``validation`` holds the figures the choice was made on (``candidates`` has each rule
    considered, so ``auto`` shows what it compared).
    """

    rule: str
    threshold: float | None
    label: str
    label_id: int
    expected_oos_share: float
    share_from: str = "validation"
    fixed: bool = False
    validation: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON for ``shrink.json`` and the benchmark record."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> OosRule:
        """Read a stored rule back; a malformed one is one line naming ``where``."""
        if not isinstance(data, dict):
            raise ShrinkError(f"{where}: expected a mapping, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted({"rule", "threshold", "label", "label_id", "expected_oos_share"} - set(data))
        if missing:
            raise ShrinkError(f"{where}: missing {', '.join(missing)}")
        rule, threshold, label_id = data["rule"], data["threshold"], data["label_id"]
        if rule not in RULES:
            raise ShrinkError(f"{where}.rule: {rule!r} is not one of {', '.join(RULES)}")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int | float)):
            raise ShrinkError(f"{where}.threshold: expected a number or null, got {threshold!r}")
        if isinstance(label_id, bool) or not isinstance(label_id, int) or label_id < 0:
            raise ShrinkError(f"{where}.label_id: expected a label index, got {label_id!r}")
        return cls(**{k: v for k, v in data.items() if k in names})


def rule_of(meta: ArtifactMeta, where: str) -> OosRule | None:
    """The rule an artifact carries, checked against its labels; None when it has none."""
    raw = meta.extra.get(EXTRA_KEY)
    if raw is None:
        return None
    rule = OosRule.from_dict(raw, f"{where}: extra.{EXTRA_KEY}")
    names = meta.label_names
    if rule.label_id >= len(names) or names[rule.label_id] != rule.label:
        raise ShrinkError(
            f"{where}: extra.{EXTRA_KEY}.label {rule.label!r} is not label {rule.label_id} of the model's labels"
        )
    return rule


def apply_rule(logits: np.ndarray, rule: OosRule | None) -> np.ndarray:
    """Label ids under the rule: the argmax, or the out-of-scope id where the score is below the threshold."""
    x = np.asarray(logits)
    ids = x.argmax(axis=-1)
    if rule is None or rule.threshold is None:
        return ids
    return np.where(SCORES[rule.rule](x) < rule.threshold, rule.label_id, ids)


# --------------------------------------------------------------------------- fitting


def oos_weights(labels: np.ndarray, oos_id: int, share: float) -> np.ndarray:
    """Per-example weights (summing to 1) under which the out-of-scope examples make up ``share``."""
    y = np.asarray(labels)
    is_oos = y == oos_id
    n_oos, n_in = int(is_oos.sum()), int((~is_oos).sum())
    w = np.zeros(y.shape, dtype=np.float64)
    if n_oos:
        w[is_oos] = share / n_oos
    if n_in:
        w[~is_oos] = (1.0 - share) / n_in if n_oos else 1.0 / n_in
    return w


def best_threshold(
    scores: np.ndarray, preds: np.ndarray, labels: np.ndarray, oos_id: int, weights: np.ndarray
) -> tuple[float | None, float]:
    """(threshold, weighted accuracy) of the rejection threshold that maximises weighted accuracy.

    Exact: every cut between two distinct scores is tried (the threshold is their
    midpoint), and "reject nothing" (None). Rejecting everything is not a candidate: a
    rule that answers ``oos`` to every query is no classifier. Among equally good cuts
    the lowest (the one that rejects least) wins.
    """
    s = np.asarray(scores, dtype=np.float64)
    p, y, w = np.asarray(preds), np.asarray(labels), np.asarray(weights, dtype=np.float64)
    order = np.argsort(s, kind="stable")
    s, p, y, w = s[order], p[order], y[order], w[order]
    kept = w * (p == y)  # credit when the example keeps its argmax
    rejected = w * (y == oos_id)  # credit when it is answered oos
    # gain[j]: weighted accuracy when the j lowest scores are rejected (j = 0 .. n-1).
    gain = kept.sum() + np.concatenate([[0.0], np.cumsum(rejected - kept)[:-1]])
    valid = np.ones(s.size, dtype=bool)
    valid[1:] = s[1:] > s[:-1]  # a cut must fall between two different scores
    gain = np.where(valid, gain, -np.inf)
    j = int(np.flatnonzero(gain >= gain.max() - 1e-12)[0])
    if j == 0:
        return None, float(gain[0])
    return float((s[j - 1] + s[j]) / 2), float(gain[j])


def figures(y_true: np.ndarray, y_pred: np.ndarray, oos_id: int, weights: np.ndarray | None = None) -> dict:
    """Accuracy, in-scope accuracy and oos recall of predictions (and weighted accuracy when weights are given)."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    in_scope = t != oos_id
    out = {
        "accuracy": float(np.mean(p == t)) if t.size else None,
        "in_scope_accuracy": float(np.mean(p[in_scope] == t[in_scope])) if in_scope.any() else None,
        "oos_recall": float(np.mean(p[~in_scope] == oos_id)) if (~in_scope).any() else None,
    }
    if weights is not None:
        out["weighted_accuracy"] = float(np.sum(np.asarray(weights) * (p == t)))
    return out


def fit_rule(
    val_logits: np.ndarray, val_labels: np.ndarray, oos_id: int, cfg: OosConfig, where: str = "oos"
) -> OosRule:
    """The rule of ``cfg`` (its ``rule``, ``threshold``, ``expected_oos_share``) fitted on validation logits.

    ``auto`` fits both scores and keeps the one with the higher weighted validation
    accuracy (max softmax on a tie: the simpler one to explain); both are recorded.

    Raises:
        ShrinkError: the validation split holds no out-of-scope example to tune on
            (unless the threshold is fixed).
    """
    logits = np.asarray(val_logits, dtype=np.float64)
    y = np.asarray(val_labels, dtype=np.int64)
    if logits.ndim != 2 or logits.shape[0] != y.size or y.size == 0:
        raise ShrinkError(f"{where}: need validation logits of shape (examples, labels), got {logits.shape}")
    n_oos = int(np.sum(y == oos_id))
    own_share = n_oos / y.size
    if n_oos == 0 and cfg.threshold is None:
        raise ShrinkError(
            f"{where}.label: the validation split has no {cfg.label!r} example to tune the threshold on "
            "(set oos.threshold, or oos.enabled: false)"
        )
    declared = cfg.expected_oos_share is not None
    share = float(cfg.expected_oos_share) if declared else own_share
    w = oos_weights(y, oos_id, share)
    preds = logits.argmax(axis=-1)
    raw = figures(y, preds, oos_id, w)
    candidates: dict[str, dict[str, Any]] = {}
    names = RULES if cfg.rule == "auto" else (cfg.rule,)
    for name in names:
        scores = SCORES[name](logits)
        if cfg.threshold is not None:
            threshold = float(cfg.threshold)
        else:
            threshold, _ = best_threshold(scores, preds, y, oos_id, w)
        ruled = preds if threshold is None else np.where(scores < threshold, oos_id, preds)
        candidates[name] = {"threshold": threshold, **figures(y, ruled, oos_id, w)}
    chosen = max(names, key=lambda n: (candidates[n]["weighted_accuracy"], n == "max_softmax"))
    return OosRule(
        rule=chosen,
        threshold=candidates[chosen]["threshold"],
        label=cfg.label,
        label_id=int(oos_id),
        expected_oos_share=share,
        share_from="declared" if declared else "validation",
        fixed=cfg.threshold is not None,
        validation={
            "examples": int(y.size),
            "oos_examples": n_oos,
            "oos_share": own_share,
            "raw": raw,
            **{k: v for k, v in candidates[chosen].items() if k != "threshold"},
            "candidates": candidates,
        },
    )


# --------------------------------------------------------------------------- the artifact


def write_rule(directory: str | Path, rule: OosRule | None) -> ArtifactMeta:
    """Put ``rule`` into an artifact's ``shrink.json`` (None: take any rule out), everything else unchanged.

    Why not ``artifact.reseal``: it would drop the parent and lineage the model card
    shows. The files and their hashes are untouched, so the content hash stays the
    model's; ``shrink.json`` itself is not a hashed file.
    """
    from shrink import files

    root = Path(directory)
    meta = read_meta(root)
    extra = {k: v for k, v in meta.extra.items() if k != EXTRA_KEY}
    if rule is not None:
        extra[EXTRA_KEY] = rule.to_dict()
    meta = dataclasses.replace(meta, extra=extra)
    files.write_text(root / META_FILE, json.dumps(dataclasses.asdict(meta), indent=2, sort_keys=False))
    return read_meta(root)
