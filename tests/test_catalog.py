"""The catalog (pipelines/steps.py) against what KFP reads statically: component signatures, folders, images, DAG."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import textwrap
import typing
from pathlib import Path

import pytest
import yaml

from components.gate.component import gate
from components.promote.component import promote
from pipelines.steps import CANDIDATE_NAMES, CANDIDATES, STEPS, display_name
from shrink.config import PruneConfig, load_pipeline_config

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "pipelines" / "configs" / "clinc150-bench.yaml"


def _collected_exclusions(component) -> set[str]:
    """The parameters a component's body leaves out when it collects its candidate inputs from ``locals()``.

    The body's first statement must be ``candidates = {k: v for k, v in locals().items() if k not in (...)}``:
    before any other statement, ``locals()`` holds exactly the parameters.
    """
    func = ast.parse(textwrap.dedent(inspect.getsource(component.python_func))).body[0]
    body = func.body[1:] if isinstance(func.body[0], ast.Expr) else func.body  # skip the docstring
    first = body[0]
    assert isinstance(first, ast.Assign) and first.targets[0].id == "candidates", "first statement collects them"
    comp = first.value
    assert isinstance(comp, ast.DictComp) and ast.unparse(comp.generators[0].iter) == "locals().items()"
    (test,) = comp.generators[0].ifs
    assert isinstance(test.ops[0], ast.NotIn)
    return {elt.value for elt in test.comparators[0].elts}


@pytest.mark.parametrize(
    ("component", "artifact_type"), [(gate, "system.Artifact@0.0.1"), (promote, "system.Model@0.0.1")]
)
def test_gate_and_promote_take_exactly_the_catalogs_candidates(component, artifact_type):
    params = list(inspect.signature(component.python_func).parameters)
    excluded = _collected_exclusions(component)
    assert excluded <= set(params), f"the body excludes parameters the signature lacks: {excluded - set(params)}"
    candidates = tuple(p for p in params if p not in excluded)
    assert candidates == CANDIDATE_NAMES  # the same names, in catalog order
    inputs = component.component_spec.inputs
    assert {name: inputs[name].type for name in candidates} == dict.fromkeys(CANDIDATE_NAMES, artifact_type)


def test_gate_fixed_inputs_are_the_expected_few():
    # A parameter added to the gate and forgotten in the body's exclusion would be read as a candidate.
    assert _collected_exclusions(gate) == {
        "decision",
        "report",
        "metrics",
        "production",
        "reference",
        "gate",
        "model_name",
    }
    assert _collected_exclusions(promote) == {"decision", "model_name", "promoted", "gate"}


def test_component_folders_are_the_catalogs_steps():
    folders = {d.name for d in (ROOT / "components").iterdir() if (d / "component.py").is_file()}
    assert folders == set(STEPS)


@pytest.mark.parametrize("name", sorted(STEPS))
def test_each_steps_image_is_its_components_base_image(name):
    component = getattr(importlib.import_module(f"components.{name}.component"), name)
    assert component.component_spec.implementation.container.image == STEPS[name].image


def test_every_candidate_is_produced_benchmarked_gated_and_promotable(tmp_path):
    """With every pruning method on, each candidate's task exists and its model flows through the catalog's wiring."""
    from pipelines.compression import compile_pipeline

    cfg = load_pipeline_config(BENCH)
    methods = typing.get_args(typing.get_args(typing.get_type_hints(PruneConfig)["methods"])[0])
    cfg = dataclasses.replace(cfg, prune=dataclasses.replace(cfg.prune, enabled=True, methods=list(methods)))
    out = tmp_path / "pipeline.yaml"
    compile_pipeline(cfg, str(out))
    tasks = next(yaml.safe_load_all(out.read_text()))["root"]["dag"]["tasks"]
    by_display = {t["taskInfo"]["name"]: key for key, t in tasks.items()}
    assert cfg.distill.search.shapes, "the bench config is a shape search"
    components = next(yaml.safe_load_all(out.read_text()))["components"]
    loop = components[tasks["for-loop-1"]["componentRef"]["name"]]["dag"]["tasks"]

    def benchmarked(dag):
        return {
            t["inputs"]["parameters"]["candidate"]["runtimeValue"]["constant"]
            for t in dag.values()
            if t["componentRef"]["name"].startswith("comp-benchmark") and "candidate" in t["inputs"]["parameters"]
        }

    per_trial = {c.name for c in CANDIDATES if c.per_trial}
    assert benchmarked(tasks) == set(CANDIDATE_NAMES) - per_trial
    assert benchmarked(loop) == per_trial
    gate_in = tasks["gate"]["inputs"]["artifacts"]
    promote_in = tasks["promote"]["inputs"]["artifacts"]
    assert set(gate_in) == {*CANDIDATE_NAMES, "production", "reference"}
    assert set(promote_in) == {*CANDIDATE_NAMES, "decision"}
    for name in per_trial:  # collected from every iteration of the search loop
        assert gate_in[name]["taskOutputArtifact"]["producerTask"] == "for-loop-1"
        assert promote_in[name]["taskOutputArtifact"]["producerTask"] == "for-loop-1"
    for c in CANDIDATES:
        if c.per_trial:
            continue
        bench = by_display[f"Benchmark {c.name}"]
        producer = {"producerTask": by_display[display_name(c.task)], "outputArtifactKey": c.output}
        assert tasks[bench]["inputs"]["artifacts"]["model"]["taskOutputArtifact"] == producer, c.name
        assert gate_in[c.name]["taskOutputArtifact"] == {"producerTask": bench, "outputArtifactKey": "result"}
        # Promote publishes what was measured: the benchmark's copy with its fitted oos rule.
        calibrated = {"producerTask": bench, "outputArtifactKey": "calibrated"}
        assert promote_in[c.name]["taskOutputArtifact"] == calibrated, c.name
