"""The DAG itself: compiled IR against a golden file, and a whole run through kfp.local."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import yaml

from shrink.config import load_pipeline_config
from tests.factories import DEMO_CONFIG

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "compression.yaml"
DEMO = DEMO_CONFIG


def _normalise(ir: dict) -> dict:
    """Drop what may change without the DAG changing: SDK version and image tags."""
    ir = json.loads(json.dumps(ir))
    ir.pop("sdkVersion", None)
    for executor in ir.get("deploymentSpec", {}).get("executors", {}).values():
        container = executor.get("container", {})
        if "image" in container:
            container["image"] = re.sub(r":[^:/@]+$", ":TAG", container["image"])
    return ir


def _compile(tmp_path: Path) -> list[dict]:
    from pipelines.compression import compile_pipeline

    out = tmp_path / "pipeline.yaml"
    compile_pipeline(load_pipeline_config(DEMO), str(out))
    return list(yaml.safe_load_all(out.read_text()))


def test_compiled_ir_matches_golden(tmp_path):
    docs = [_normalise(d) for d in _compile(tmp_path)]
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(yaml.safe_dump_all(docs, sort_keys=True))
    expected = list(yaml.safe_load_all(GOLDEN.read_text()))
    assert docs == expected, (
        "the DAG changed: review the diff, then regenerate with UPDATE_GOLDEN=1 pytest tests/test_pipeline.py"
    )


def test_compiled_ir_loads_back_and_places_every_task(tmp_path):
    from kfp import components

    out = tmp_path / "pipeline.yaml"
    from pipelines.compression import compile_pipeline

    compile_pipeline(load_pipeline_config(DEMO), str(out))
    assert components.load_component_from_file(str(out)) is not None
    pipeline_spec, platform = list(yaml.safe_load_all(out.read_text()))
    executors = pipeline_spec["deploymentSpec"]["executors"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name, executor in executors.items():
        container = executor["container"]
        assert not container["image"].endswith(":latest")
        assert "resources" in container, f"{name} has no resource requests/limits"
        assert name in k8s and k8s[name].get("nodeSelector"), f"{name} is not placed on a node pool"
    gpu_execs = [n for n in executors if any(s in n for s in ("train-teacher", "distill", "teacher-logits"))]
    assert gpu_execs
    for name in gpu_execs:
        assert executors[name]["container"]["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
        assert any(t.get("key") == "nvidia.com/gpu" for t in k8s[name].get("tolerations", []))
    bench = [n for n in executors if "benchmark" in n]
    for name in bench:
        res = executors[name]["container"]["resources"]
        assert res["resourceCpuRequest"] == res["resourceCpuLimit"], "benchmarks need guaranteed QoS"
    # The reference, then the champion, are measured after the last candidate (never beside one), in that order,
    # and are the gate's reference and production inputs.
    tasks = pipeline_spec["root"]["dag"]["tasks"]
    champ, reference = tasks["benchmark-production"], tasks["benchmark-reference"]
    assert "benchmark-reference" in champ["dependentTasks"]
    assert tasks["gate"]["inputs"]["artifacts"]["reference"]["taskOutputArtifact"]["producerTask"] == (
        "benchmark-reference"
    )
    assert tasks["gate"]["inputs"]["artifacts"]["production"]["taskOutputArtifact"]["producerTask"] == (
        "benchmark-production"
    )
    candidates = [n for n, t in tasks.items() if re.fullmatch(r"comp-benchmark(-\d+)?", t["componentRef"]["name"])]
    waited_on = {d for n in candidates for d in tasks[n].get("dependentTasks", [])}
    last = [n for n in candidates if n not in waited_on]
    assert len(last) == 1 and last[0] in reference["dependentTasks"]
    champ_exec = champ["componentRef"]["name"].replace("comp-", "exec-")
    assert k8s[champ_exec].get("secretAsEnv") and k8s[champ_exec].get("configMapAsEnv"), "needs the object store"


def test_structured_pruning_takes_the_onnx_int8_path_to_the_gate(tmp_path):
    """With pruning on, the structured model is also exported, fused and quantized, and both reach the gate."""
    import dataclasses

    from pipelines.compression import compile_pipeline

    cfg = load_pipeline_config(DEMO)
    cfg = dataclasses.replace(
        cfg, prune=dataclasses.replace(cfg.prune, enabled=True, methods=["movement", "structured"])
    )
    out = tmp_path / "pipeline.yaml"
    compile_pipeline(cfg, str(out))
    spec = next(yaml.safe_load_all(out.read_text()))
    tasks = spec["root"]["dag"]["tasks"]

    def producer(task: dict, name: str) -> str:
        return task["inputs"]["artifacts"][name]["taskOutputArtifact"]["producerTask"]

    onnx = [
        n
        for n, t in tasks.items()
        if t["componentRef"]["name"].startswith("comp-export-onnx") and producer(t, "model") == "prune-structured"
    ]
    assert len(onnx) == 1
    # Both pruning methods start from the small-vocabulary student, so their savings add to vocabulary pruning's.
    assert cfg.vocabulary.enabled
    for name in ("prune-structured", "prune"):
        assert producer(tasks[name], "student") == "prune-vocabulary", name
    gate_inputs = tasks["gate"]["inputs"]["artifacts"]
    assert {"pruned_movement", "pruned_structured", "pruned_structured_int8"} <= set(gate_inputs)
    # The INT8 structured candidate is benchmarked from the chain that starts at the pruned model.
    bench = producer(tasks["gate"], "pruned_structured_int8")
    quant = producer(tasks[bench], "model")
    assert tasks[quant]["componentRef"]["name"].startswith("comp-quantize-ort-dynamic")
    optimize = producer(tasks[quant], "model")
    assert tasks[optimize]["componentRef"]["name"].startswith("comp-optimize-onnx")
    assert producer(tasks[optimize], "model") == onnx[0]


def test_a_new_selection_rule_keeps_every_trials_inputs(tmp_path):
    """The trials do not read ``distill.search``, so changing it leaves their inputs, and kfp's cache keys, alone.

    The selection tolerance and the parallelism only change the DAG around the trials; had the whole section
    reached them, a new tolerance would have trained every student again.
    """
    import dataclasses

    from pipelines.compression import compile_pipeline

    def compiled(**search) -> dict:
        cfg = load_pipeline_config(DEMO)
        cfg = dataclasses.replace(
            cfg, distill=dataclasses.replace(cfg.distill, search=dataclasses.replace(cfg.distill.search, **search))
        )
        out = tmp_path / "pipeline.yaml"
        compile_pipeline(cfg, str(out))
        return next(yaml.safe_load_all(out.read_text()))

    before, after = compiled(), compiled(select_tolerance=0.02, parallelism=2)
    params = before["root"]["inputDefinitions"]["parameters"]
    assert "search" not in params["distill"]["defaultValue"]
    assert params["distill"]["defaultValue"]["train"]  # the trials' own settings are still there
    assert params == after["root"]["inputDefinitions"]["parameters"]
    for name in ("comp-teacher-logits", "comp-distill"):
        assert before["components"][name] == after["components"][name], name

    # The tolerance itself still reaches select_student.
    def tolerance(spec: dict) -> float:
        return spec["root"]["dag"]["tasks"]["select-student"]["inputs"]["parameters"]["tolerance"]["runtimeValue"][
            "constant"
        ]

    assert (tolerance(before), tolerance(after)) == (0.0, 0.02)
