"""The gate's decision for people: an HTML page with a table and a plot, and a terminal table.

The plot is the one from *Natural Language Processing with Transformers*
(chapter 8): p50 latency against accuracy, bubble area proportional to model
size, so the trade-off between the three is visible at a glance; the promoted
model is marked. The page is one self-contained file (the PNG is embedded as
base64), because KFP's HTML viewer and e-mail attachments show no side files.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from shrink.record import summarize

COLUMNS = (
    ("candidate", "candidate"),
    ("status", "status"),
    ("size_mb", "size MB"),
    ("p50_ms", "p50 ms"),
    ("p95_ms", "p95 ms"),
    ("throughput_qps", "req/s"),
    # With the model's out-of-scope rule (as it serves), then "raw": its bare argmax, without the rule.
    ("accuracy", "accuracy"),
    ("raw_accuracy", "raw"),
    ("in_scope_accuracy", "in-scope"),
    ("raw_in_scope_accuracy", "raw"),
    ("oos_recall", "oos recall"),
    ("raw_oos_recall", "raw"),
    ("oos_rule", "oos rule"),
    ("speedup_p50", "speed-up"),
    ("size_reduction", "size -%"),
    ("ref_speedup", "x faster than ref."),
    ("ref_smaller", "x smaller than ref."),
)
STATUS_COLOURS = {
    "pass": "#2e7d32",
    "fail": "#c62828",
    "invalid": "#6d4c41",
    "baseline": "#546e7a",
    "reference": "#1565c0",
}


REFERENCE_COLUMNS = ("ref_speedup", "ref_smaller")


def _columns(decision: dict) -> tuple[tuple[str, str], ...]:
    """The table's columns: the reference ratios only when this run timed a reference."""
    return tuple(c for c in COLUMNS if _reference(decision) or c[0] not in REFERENCE_COLUMNS)


def _reference(decision: dict) -> dict | None:
    """The decision's usable reference section (shrink/reference.py), or None."""
    ref = decision.get("reference")
    return ref if isinstance(ref, dict) and ref.get("usable") else None


def _reference_row(decision: dict) -> dict[str, Any] | None:
    """The reference architecture as a table row: its timing and size; it has no accuracy and no verdict."""
    ref = _reference(decision)
    if ref is None:
        return None
    return {
        "candidate": f"{ref.get('display') or ref.get('architecture')} (reference)",
        "status": "reference",
        "size_mb": ref.get("size_mb"),
        "p50_ms": ref.get("p50_ms"),
        "p95_ms": ref.get("p95_ms"),
        "chosen": False,
        "checks": {},
        "reasons": [],
    }


PERCENT = {"accuracy", "raw_accuracy", "in_scope_accuracy", "raw_in_scope_accuracy", "oos_recall", "raw_oos_recall"}


def _rows(decision: dict, records: list[dict] | None) -> list[dict[str, Any]]:
    """One row per candidate from the decision; records only fill in a summary the decision lacks."""
    by_name = {r.get("candidate"): r for r in records or [] if isinstance(r, dict)}
    baseline = by_name.get("teacher") or (decision.get("records") or {}).get("teacher")
    ratios = (_reference(decision) or {}).get("ratios") or {}
    rows = []
    for entry in decision.get("candidates", []):
        summary = entry.get("summary")
        if summary is None and entry["name"] in by_name and entry.get("status") != "invalid":
            summary = summarize(by_name[entry["name"]], baseline)
        rows.append(
            {
                "candidate": entry["name"],
                "status": entry["status"],
                **(summary or {}),
                "ref_speedup": (ratios.get(entry["name"]) or {}).get("p50_speedup"),
                "ref_smaller": (ratios.get(entry["name"]) or {}).get("size_reduction"),
                "chosen": entry["name"] == decision.get("chosen"),
                "checks": {c["slo"]: c for c in entry.get("checks", [])},
                "reasons": entry.get("reasons", []),
            }
        )
    return rows


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "speedup_p50":
        return f"{value:.2f}x"
    if key in ("ref_speedup", "ref_smaller"):
        return f"{value:.0f}x" if value >= 10 else f"{value:.1f}x"
    if key == "size_reduction":
        return f"{100 * value:.0f}%"
    if key in PERCENT:
        return f"{100 * value:.1f}"
    if key == "throughput_qps":
        return f"{value:.0f}"
    if isinstance(value, float):
        return f"{value:.2f}" if value < 100 else f"{value:.0f}"
    return str(value)


def _slo_names(rows: list[dict]) -> list[str]:
    names: list[str] = []
    for row in rows:
        names += [n for n in row["checks"] if n not in names]
    return names


def format_table(decision: dict, records: list[dict] | None = None) -> str:
    """A plain aligned table of every candidate and its verdict, for the terminal and logs."""
    rows = _rows(decision, records)
    reference = _reference_row(decision)
    rows += [reference] if reference else []
    columns = _columns(decision)
    header = [title for _, title in columns] + ["failed SLOs"]
    body = []
    for row in rows:
        name = row["candidate"] + (" *" if row["chosen"] else "")
        cells = [name] + [_cell(k, row.get(k)) for k, _ in columns[1:]]
        failed = [n for n, c in row["checks"].items() if not c["passed"]]
        if row["status"] == "invalid" or (row["status"] == "fail" and not row["checks"]):
            failed = [row["reasons"][0] if row["reasons"] else "?"]
        body.append(cells + [", ".join(failed) or "-"])
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    numeric = {i for i, (k, _) in enumerate(columns) if k not in ("candidate", "status", "oos_rule")}

    def line(cells):
        pairs = enumerate(zip(cells, widths, strict=True))
        out = [str(c).rjust(w) if i in numeric else str(c).ljust(w) for i, (c, w) in pairs]
        return "  ".join(out).rstrip()

    lines = [line(header), line(["-" * w for w in widths]), *(line(r) for r in body)]
    chosen = decision.get("chosen")
    lines.append("")
    verdict = f"promoted: {chosen} (*)" if chosen else "promoted: nothing"
    lines.append(f"{verdict}: {decision.get('reason', '')}")
    if reference:
        lines.append(_reference_sentence(decision))
    return "\n".join(lines)


def _reference_sentence(decision: dict) -> str:
    """One line: what the reference is, its figures, and the promoted model's ratios against it."""
    ref = _reference(decision) or {}
    name = ref.get("display") or ref.get("architecture")
    line = (
        f"reference: {name} ({ref.get('weights', 'random weights')}), timed in this run: "
        f"p50 {_cell('p50_ms', ref.get('p50_ms'))} ms, {_cell('size_mb', ref.get('size_mb'))} MB"
    )
    chosen = (ref.get("ratios") or {}).get(decision.get("chosen") or "")
    if chosen:
        line += (
            f"; {decision['chosen']} is {_cell('ref_speedup', chosen.get('p50_speedup'))} faster (p50) and "
            f"{_cell('ref_smaller', chosen.get('size_reduction'))} smaller"
        )
    return line


def plot_png(decision: dict, records: list[dict] | None = None) -> bytes:
    """Latency (p50) vs accuracy, bubble area = size, promoted model ringed; PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [r for r in _rows(decision, records) if r.get("p50_ms") is not None and r.get("accuracy") is not None]
    fig = Figure(figsize=(8, 5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    biggest = max((r.get("size_mb") or 0 for r in rows), default=0) or 1
    for row in rows:
        area = 40 + 1600 * (row.get("size_mb") or 0) / biggest
        colour = STATUS_COLOURS.get(row["status"], "#777777")
        ax.scatter(
            row["p50_ms"], 100 * row["accuracy"], s=area, alpha=0.45, color=colour, edgecolors=colour, linewidths=1
        )
        if row["chosen"]:
            ax.scatter(
                row["p50_ms"],
                100 * row["accuracy"],
                s=area + 250,
                facecolors="none",
                edgecolors="#f9a825",
                linewidths=3,
            )
            ax.scatter(
                [],
                [],
                s=120,
                facecolors="none",
                edgecolors="#f9a825",
                linewidths=2,
                label=f"promoted: {row['candidate']}",
            )
        size = f"{row['size_mb']:.0f} MB" if row.get("size_mb") is not None else ""
        ax.annotate(
            f"{row['candidate']}\n{size}",
            (row["p50_ms"], 100 * row["accuracy"]),
            textcoords="offset points",
            xytext=(8, 6),
            fontsize=8,
        )
    for status, colour in STATUS_COLOURS.items():
        if any(r["status"] == status for r in rows):
            ax.scatter([], [], color=colour, alpha=0.45, s=60, label=status)
    ax.set_xlabel("p50 latency (ms, batch 1)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Latency vs accuracy (bubble area = model size)")
    ax.grid(True, alpha=0.3)
    if rows:
        ax.legend(loc="lower right", fontsize=8)
        ax.margins(x=0.15, y=0.12)
        ax.set_xlim(left=0)
    else:
        ax.text(0.5, 0.5, "no valid benchmark records", ha="center", va="center", transform=ax.transAxes)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _check_cell(check: dict | None) -> str:
    if check is None:
        return "<td class='na'>-</td>"
    measured = "-" if check.get("measured") is None else f"{check['measured']:.4g}"
    limit = "-" if check.get("limit") is None else f"{check['limit']:.4g}"
    tip = html.escape(check.get("resolved") or check.get("reason") or "", quote=True)
    if check.get("reason") and check.get("resolved"):
        tip += html.escape(f"; {check['reason']}", quote=True)
    mark = "pass" if check["passed"] else "FAIL"
    cls = "pass" if check["passed"] else "fail"
    return f"<td class='{cls}' title='{tip}'>{mark}<br><small>{measured} / {limit}</small></td>"


def render_html(decision: dict, records: list[dict] | None = None) -> str:
    """The report page as a string (see :func:`write_report`)."""
    rows = _rows(decision, records)
    slos = _slo_names(rows)
    reference = _reference_row(decision)
    rows += [reference] if reference else []
    png = base64.b64encode(plot_png(decision, records)).decode()
    esc = html.escape
    columns = _columns(decision)
    head = "".join(f"<th>{esc(t)}</th>" for _, t in columns) + "".join(f"<th>{esc(s)}</th>" for s in slos)
    body = []
    for row in rows:
        cls = " class='chosen'" if row["chosen"] else ""
        cells = [
            f"<td>{esc(row['candidate'])}{' &#9733;' if row['chosen'] else ''}</td>",
            f"<td style='color:{STATUS_COLOURS.get(row['status'], '#000')}'>{esc(row['status'])}</td>",
        ]
        cells += [f"<td class='num'>{esc(_cell(k, row.get(k)))}</td>" for k, _ in columns[2:]]
        cells += [_check_cell(row["checks"].get(s)) for s in slos]
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    reasons = "".join(
        f"<li><b>{esc(r['candidate'])}</b>: {esc('; '.join(r['reasons']))}</li>" for r in rows if r["reasons"]
    )
    goals = "".join(
        f"<li><code>{esc(str(g.get('name') or g.get('metric')))}</code>: {esc(g.get('metric', ''))} "
        f"{esc(g.get('direction', ''))}, {esc(g.get('kind', ''))} {esc(str(g.get('value')))}"
        f"{' vs ' + esc(str(g['baseline'])) if g.get('baseline') else ''}</li>"
        for g in (decision.get("config") or {}).get("slos", [])
    )
    chosen = decision.get("chosen")
    verdict = f"Promoted <b>{esc(chosen)}</b>" if chosen else "<b>Nothing promoted</b>"
    production = decision.get("production") or {}
    prod_summary = production.get("summary") or {}
    prod_figures = (
        f"; p50 {_cell('p50_ms', prod_summary.get('p50_ms'))} ms, p95 "
        f"{_cell('p95_ms', prod_summary.get('p95_ms'))} ms, accuracy "
        f"{_cell('accuracy', prod_summary.get('accuracy'))}%"
        if prod_summary
        else ""
    )
    prod_line = (
        f"Production before this run: <code>{esc(str(production.get('version')))}</code> "
        f"({'compared' if production.get('compared') else 'not compared'}"
        f"{', measured ' + esc(production['measured']) if production.get('measured') else ''}"
        f"{esc(prod_figures)})"
        if production
        else "Production before this run: none"
    )
    hw = (decision.get("baseline") or {}).get("hardware") or {}
    warnings = "".join(f"<li>{esc(w)}</li>" for w in decision.get("warnings", []))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>shrink: SLO gate report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }}
th {{ background: #f0f0f0; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
td.pass {{ background: #e8f5e9; }} td.fail {{ background: #ffebee; }} td.na {{ color: #999; }}
tr.chosen td:first-child {{ font-weight: bold; }}
small {{ color: #555; }}
</style></head><body>
<h1>SLO gate report</h1>
<p>{verdict}: {esc(decision.get("reason", ""))}</p>
<p>{prod_line}. Policy: <code>{esc(str((decision.get("policy") or {}).get("name")))}</code>.
Hardware: {esc(str(hw.get("cpu_model", "unknown")))}, {esc(str(hw.get("cores_used", "?")))} core(s).
Created {esc(str(decision.get("created", "")))}.</p>
{f'<ul class="warnings">{warnings}</ul>' if warnings else ""}
<h2>Candidates</h2>
<table id="candidates"><thead><tr>{head}</tr></thead><tbody>
{"".join(body)}
</tbody></table>
<p><small>SLO cells: verdict, then measured / limit; hover for how the limit was resolved.
Speed-up and size reduction are against the teacher; "x faster / smaller than ref." against the reference
architecture timed in this run. Accuracy, in-scope accuracy and oos recall are with the model's out-of-scope rule
(the oos rule column, tuned on the validation split), as it serves; each "raw" column after them is the same
figure without the rule (the bare argmax).</small></p>
{f"<p>{esc(_reference_sentence(decision))}.</p>" if reference else ""}
<h2>Latency, accuracy and size</h2>
<img alt="p50 latency vs accuracy, bubble area = model size" src="data:image/png;base64,{png}">
<h2>Goals</h2><ul>{goals}</ul>
<h2>Why candidates failed</h2><ul>{reasons}</ul>
</body></html>
"""


def write_report(decision: dict, records: list[dict] | None, out_html: str | Path) -> Path:
    """Write the self-contained HTML report (table, per-SLO verdicts, embedded plot) and return its path."""
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(decision, records), encoding="utf-8")
    return out
