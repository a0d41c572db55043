"""Out-of-scope calibration of a teacher and its compressed student: test figures with and without the rule.

Not CI (for ``make bench``): each model's validation and test logits are computed once
through ``shrink.runtime.open_classifier`` (the served code path; any rule an artifact
already carries is ignored, the logits are raw), then every rule (``max_softmax``,
``energy``, ``auto``) is fitted on the validation split only, tuned for the validation
split's own out-of-scope share and for each ``--share`` (default 0.18, the share of
CLINC150's test split and the demo's declared traffic mix), and applied to the test
split. Rows: test accuracy, in-scope accuracy, oos recall, the threshold, and the
weighted validation accuracy the threshold was chosen on.

    .venv/bin/python bench/oos.py --teacher <run>/.../train-teacher/model
        --model <run>/.../quantize-ort-static/out [--model ...] --dataset <run>/.../prepare-data/dataset
        [--share 0.18] [--out results/oos]

Results go to ``<out>/oos-bench.json`` and ``<out>/oos-bench.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def logits_of(model: Path, dd, threads: int) -> dict:
    """Raw validation and test logits of one artifact, with its labels."""
    import numpy as np

    from shrink.artifact import read_meta
    from shrink.calibration import validation_logits

    out = {"labels": read_meta(model).label_names}
    for split in ("validation", "test"):
        start = time.perf_counter()
        out[split] = validation_logits(model, list(dd[split]["text"]), threads=threads)
        out[f"{split}_labels"] = np.asarray(dd[split]["label"], dtype=np.int64)
        print(f"  {model.name}: {split} logits {out[split].shape} in {time.perf_counter() - start:.1f}s", flush=True)
    return out


def rows_for(name: str, data: dict, shares: list[float | None], label: str) -> list[dict]:
    """The raw row, then one row per (share, rule), each fitted on validation and measured on test."""
    from shrink.config import OosConfig
    from shrink.oos import apply_rule, figures, fit_rule

    oos_id = data["labels"].index(label)
    test, y = data["test"], data["test_labels"]
    rows = [
        {"model": name, "rule": "none (argmax)", "share": "-", "threshold": None, **figures(y, test.argmax(-1), oos_id)}
    ]
    for share in shares:
        for rule_name in ("max_softmax", "energy", "auto"):
            cfg = OosConfig(label=label, rule=rule_name, expected_oos_share=share)
            rule = fit_rule(data["validation"], data["validation_labels"], oos_id, cfg)
            rows.append(
                {
                    "model": name,
                    "rule": rule_name if rule_name != "auto" else f"auto ({rule.rule})",
                    "share": f"{rule.expected_oos_share:.3f} ({rule.share_from})",
                    "threshold": rule.threshold,
                    "val_weighted_raw": rule.validation["raw"]["weighted_accuracy"],
                    "val_weighted": rule.validation["weighted_accuracy"],
                    **figures(y, apply_rule(test, rule), oos_id),
                }
            )
    return rows


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table, figures in percent."""

    def pct(x):
        return "-" if x is None else f"{100 * x:.2f}"

    head = (
        "| model | rule | tuned for oos share | threshold | val. weighted acc. (raw -> rule) "
        "| test accuracy | in-scope accuracy | oos recall |"
    )
    lines = [head, "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        val = f"{pct(r['val_weighted_raw'])} -> {pct(r['val_weighted'])}" if "val_weighted" in r else "-"
        thr = "-" if r["threshold"] is None else f"{r['threshold']:.4g}"
        lines.append(
            f"| {r['model']} | {r['rule']} | {r['share']} | {thr} | {val} | {pct(r['accuracy'])} "
            f"| {pct(r['in_scope_accuracy'])} | {pct(r['oos_recall'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Fit and measure every rule on every given model; print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--model", type=Path, action="append", required=True, help="a student artifact (repeatable)")
    parser.add_argument("--dataset", type=Path, required=True, help="a prepared dataset (prepare-data/dataset)")
    parser.add_argument("--share", type=float, action="append", help="declared oos share(s) (default 0.18)")
    parser.add_argument("--label", default="oos")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "oos")
    args = parser.parse_args(argv)

    from shrink.data import load_prepared
    from shrink.errors import ShrinkError

    try:
        dd, _ = load_prepared(args.dataset)
        shares = [None, *(args.share or [0.18])]
        rows = []
        for name, path in [("teacher", args.teacher), *((p.name, p) for p in args.model)]:
            rows += rows_for(name, logits_of(path, dd, args.threads), shares, args.label)
    except ShrinkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    table = markdown(rows)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "oos-bench.json").write_text(json.dumps(rows, indent=2))
    (args.out / "oos-bench.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
