"""The shape search: depths in the trial grid, their layers, their names, bad input, and the per-trial promotion."""

import json

import pytest
import yaml

from shrink.config import (
    DistillConfig,
    PipelineConfig,
    SearchConfig,
    from_dict,
    layers_for_depth,
    load_pipeline_config,
    parse_trial,
    trial_depth,
    trial_label,
)
from shrink.errors import ShrinkError
from shrink.gate import run_gate
from shrink.preflight import check
from shrink.promote import _chosen_model
from shrink.record import read_record
from shrink.slo import gate_config
from tests.factories import DEMO_CONFIG, make_artifact, record


def test_depths_spread_over_the_teacher_ending_at_the_top():
    assert [layers_for_depth(d, 6) for d in (1, 2, 3, 6)] == [[5], [2, 5], [1, 3, 5], [0, 1, 2, 3, 4, 5]]
    assert layers_for_depth(3, 6) == [1, 3, 5]  # the demo's hand-picked student is the depth-3 shape
    with pytest.raises(ShrinkError, match=r"distill.search.depth: 7 is not between 1 and the teacher's 6"):
        layers_for_depth(7, 6)


def test_the_grid_crosses_depth_with_the_other_axes_and_names_each_trial():
    trials = SearchConfig(depth=[2, 4], alpha=[0.5, 1.0], temperature=[2.0], learning_rate=[1e-4]).trials()
    assert [(t["depth"], t["alpha"]) for t in trials] == [(2, 0.5), (2, 1.0), (4, 0.5), (4, 1.0)]
    assert [trial_label(t) for t in trials][0] == "L2-a0.5-T2-lr0.0001"
    assert len({trial_label(t) for t in trials}) == 4
    assert "depth" not in SearchConfig().trials()[0]  # no search: the configured student_layers
    assert not SearchConfig(depth=[3]).shapes and SearchConfig(depth=[2, 3]).shapes


def test_a_trials_depth_arrives_from_kfp_as_a_float_and_is_checked():
    assert trial_depth({"depth": 3.0, "alpha": 0.5}) == 3
    assert trial_depth({"alpha": 0.5}) is None
    for bad in (0, 2.5, "3", True):
        with pytest.raises(ShrinkError, match="depth must be a whole number >= 1"):
            trial_depth({"depth": bad})
    assert parse_trial({"depth": 2, "alpha": 0.5, "temperature": 2, "learning_rate": 1e-4}) == (0.5, 2.0, 1e-4)


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ({"depth": [0, 2]}, r"distill.search.depth: every depth must be >= 1"),
        ({"depth": [2, 2]}, r"distill.search.depth: \[2, 2\] repeats a depth"),
    ],
)
def test_bad_depths_are_one_line_naming_the_key(search, message):
    with pytest.raises(ShrinkError, match=message):
        from_dict(DistillConfig, {"search": search}, "distill")


def test_a_depth_needs_teacher_layers_not_a_checkpoint():
    with pytest.raises(ShrinkError, match=r"distill.search.depth: a depth is a number of the teacher's layers"):
        from_dict(DistillConfig, {"student_checkpoint": "some/dir", "search": {"depth": [2, 3]}}, "distill")


def test_a_depth_beyond_the_teacher_is_refused_before_any_step(tmp_path):
    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    raw["gate"] = {"slos": [{"metric": "accuracy", "direction": "higher_is_better", "kind": "threshold", "value": 0.5}]}
    raw["distill"]["search"]["depth"] = [3, 8]
    cfg = from_dict(PipelineConfig, raw, str(DEMO_CONFIG))
    with pytest.raises(ShrinkError, match=r"distill.search.depth: \[8\] deeper than the teacher's 6 layers"):
        check(cfg, "c.yaml", local=False)


def test_the_demo_config_is_not_a_shape_search():
    # The demo runs the shape the bench chose; the wide search is clinc150-bench.yaml's (make bench).
    assert not load_pipeline_config(DEMO_CONFIG).distill.search.shapes


def _write(tmp_path, rec):
    path = tmp_path / f"{rec['candidate'].replace('@', '_')}.json"
    path.write_text(json.dumps(rec))
    return path


def test_per_trial_records_keep_their_own_names_and_a_stray_one_is_invalid(tmp_path):
    good = _write(tmp_path, record("searched@L2-a0.5-T2-lr0.0001"))
    stray = _write(tmp_path, record("student"))
    assert read_record(good, "searched", per_trial=True)["candidate"] == "searched@L2-a0.5-T2-lr0.0001"
    assert "wired as 'searched'" in read_record(stray, "searched", per_trial=True)["error"]


def test_the_gate_chooses_among_shapes_and_promote_finds_the_chosen_model_by_hash(tmp_path):
    a, meta_a = make_artifact(tmp_path / "a", seed=1)
    b, meta_b = make_artifact(tmp_path / "b", seed=2)
    ha, hb = meta_a.content_hash(), meta_b.content_hash()
    paths = [
        _write(tmp_path, record("searched@L2-a0.5-T2-lr0.0001", p95=1.0, content_hash=ha)),
        _write(tmp_path, record("searched@L4-a0.5-T2-lr0.0001", p95=2.0, content_hash=hb)),
    ]
    teacher = _write(tmp_path, record("teacher", p95=9.0))
    cfg = gate_config(
        {
            "slos": [{"metric": "p95_latency_ms", "direction": "lower_is_better", "kind": "threshold", "value": 5}],
            "compare_to_production": False,
            "policy": "lowest_p95",
        }
    )
    result = run_gate({"teacher": teacher, "searched": paths}, None, cfg, "m", tmp_path / "d.json", tmp_path / "r.html")
    assert result.chosen == "searched@L2-a0.5-T2-lr0.0001"
    decision = json.loads((tmp_path / "d.json").read_text())
    assert _chosen_model(result.chosen, decision, {"searched": [b, a]}) == a
    with pytest.raises(ShrinkError, match="no model artifact named 'searched@L2-a0.5-T2-lr0.0001'"):
        _chosen_model(result.chosen, decision, {"searched": [b]})
