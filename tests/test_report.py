import base64
import re

from shrink.gate import decide
from shrink.report import format_table, plot_png, write_report
from shrink.slo import gate_config
from tests.factories import record

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_gate():
    records = [
        record("teacher", acc=0.92, p50=8.0, p95=10.0, size=90.0),
        record("student", acc=0.91, p50=4.0, p95=5.0, size=45.0),
        record(
            "ort_int8_dynamic",
            acc=0.905,
            p50=2.0,
            p95=2.5,
            size=23.0,
            raw={"accuracy": 0.871, "in_scope_accuracy": 0.947, "oos_recall": 0.493},
            oos_rule={"rule": "max_softmax", "threshold": 0.4712, "label": "oos"},
        ),
        record("torch_int8", acc=0.80, p50=3.0, p95=3.5, size=30.0),
        {"candidate": "onnx_fp32", "error": "bench/onnx_fp32.json: benchmark result unreadable"},
    ]
    cfg = gate_config(
        {
            "compare_to_production": False,
            "slos": [
                {
                    "metric": "p95_latency_ms",
                    "direction": "lower_is_better",
                    "kind": "threshold",
                    "value": 8.0,
                },
                {
                    "name": "max_accuracy_drop",
                    "metric": "accuracy",
                    "direction": "higher_is_better",
                    "kind": "max_degradation",
                    "value": 0.02,
                    "baseline": "teacher",
                },
            ],
        }
    )
    return decide(records, cfg), records


def test_html_report_has_table_verdicts_and_embedded_png(tmp_path):
    decision, records = run_gate()
    out = write_report(decision, records, tmp_path / "sub" / "report.html")
    page = out.read_text()
    table = re.search(r"<table id=\"candidates\">.*?</table>", page, re.S).group(0)
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)
    assert len(rows) == 1 + 5  # header + every candidate, the invalid one included
    header = rows[0]
    for title in (
        "size MB",
        "p50 ms",
        "p95 ms",
        "req/s",
        "accuracy",
        "oos recall",
        "speed-up",
        "size -%",
        "max_p95_latency_ms",
        "max_accuracy_drop",
        "collapse",
    ):
        assert f"<th>{title}</th>" in header, title
    int8 = next(r for r in rows if "ort_int8_dynamic" in r)
    assert "&#9733;" in int8 and "4.00x" in int8 and "74%" in int8  # promoted, 8/2 ms, 1 - 23/90
    torch = next(r for r in rows if ">torch_int8<" in r)
    assert "FAIL" in torch and "0.8 / 0.9" in torch  # accuracy 0.80 against limit 0.92 - 0.02
    assert "benchmark result unreadable" in page
    # The plot is embedded, so the page stands alone.
    png = base64.b64decode(re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page).group(1))
    assert png.startswith(PNG_MAGIC) and len(png) > 5_000
    assert "Promoted <b>ort_int8_dynamic</b>" in page


def test_report_escapes_candidate_names(tmp_path):
    decision, records = run_gate()
    decision["candidates"][1]["name"] = "<script>x</script>"
    page = write_report(decision, records, tmp_path / "r.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_plot_without_valid_records_still_renders():
    decision = decide([{"candidate": "teacher", "error": "missing"}], gate_config({"compare_to_production": False}))
    assert plot_png(decision).startswith(PNG_MAGIC)


def test_format_table_is_aligned_and_names_failures():
    decision, records = run_gate()
    text = format_table(decision)  # the decision alone is enough (the CLI passes only it)
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["candidate", "status"]
    table = lines[: lines.index("")]
    assert len(table) == 2 + 5
    # Columns line up: wherever the rule line has its two-space gaps, every row has blanks.
    gaps = [m.start() for m in re.finditer(r"(?<=-)  (?=-)", table[1])]
    assert len(gaps) == 15
    for line in table:
        assert all(line[i : i + 2] == "  " for i in gaps), line
    int8 = next(line for line in table if line.startswith("ort_int8_dynamic *"))
    assert " pass " in int8 and "4.00x" in int8
    # With the oos rule and without it (raw), side by side; a record without a rule has no raw figures.
    assert re.search(r" 90\.5 +87\.1 +90\.5 +94\.7 +60\.0 +49\.3 +softmax<0\.471 ", int8), int8
    assert re.search(r" 91\.0 +- +91\.0 +- +60\.0 +- +- ", next(line for line in table if line.startswith("student")))
    torch = next(line for line in table if line.startswith("torch_int8"))
    assert "max_accuracy_drop" in torch and "max_p95_latency_ms" not in torch
    assert "benchmark missing or invalid" in next(line for line in table if line.startswith("onnx_fp32"))
    assert lines[-1].startswith("promoted: ort_int8_dynamic (*)")
    assert format_table(decision, records) == text
