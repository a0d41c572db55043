"""The catalog: every step of the pipeline and every candidate model it produces, each in one place.

A step is a component folder (``components/<name>/``) with how it runs: its image, its node
pool, whether KFP may cache it, whether it is retried and whether it talks to the object
store itself. A candidate is a model the gate judges: the DAG task and output that
produce it. Everything else derives from here: the DAG's task settings
(``pipelines/compression.py``), the image list (``pipelines/images.py``, ``docker/build.sh``),
the gate's and promote's inputs, the run listing (``pipelines/submit.py``) and the tests.

Adding a candidate: one ``Candidate`` line below, the task that makes it in
``compression.py``, and its name as an input of the gate and promote components (KFP reads
component signatures statically, so those two are written out; ``tests/test_catalog.py``
fails until they agree with this list).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Pool = Literal["gpu", "cpu", "benchmark"]


@dataclass(frozen=True)
class Step:
    """One KFP component and how every task of it runs.

    Attributes:
        name: The component's folder under ``components/`` and its function's name.
        display: The task's name in the KFP UI (a suffix tells repeated tasks apart).
        pool: ``gpu`` for training, ``benchmark`` for timing (guaranteed QoS, production
            type), ``cpu`` for the rest, which is also the production type: quantization
            and export meet the kernels the model will serve on.
        cached: Output depends only on inputs and seeds, so KFP may reuse it.
        retried: Talks to the network (hub, object store): transient failures (no answer,
            5xx, timeouts) are retried inside the step with backoff for up to
            ``compression.TRANSIENT_BUDGET_S`` seconds (``shrink/transient.py``). The task is
            never retried by KFP: its retry policy cannot tell a dropped connection from bad
            input, and repeated every deterministic error (a label mismatch, three times, with
            30 + 60 + 120 s of backoff before the user saw it).
        object_store: Reads or writes object storage itself, beyond KFP's artifact passing,
            so it gets the S3 credentials.
    """

    name: str
    display: str
    pool: Pool = "cpu"
    cached: bool = True
    retried: bool = False
    object_store: bool = False

    @property
    def image(self) -> str:
        """The image repository name (``prepare_data`` -> ``shrink-prepare-data``)."""
        return "shrink-" + self.name.replace("_", "-")

    @property
    def gpu(self) -> bool:
        """Whether the step's image carries CUDA PyTorch and its task asks for a GPU node."""
        return self.pool == "gpu"


STEPS: dict[str, Step] = {
    s.name: s
    for s in (
        # Never cached: it decides, by the data's contents, whether everything after it may be (shrink/fingerprint.py).
        Step("fingerprint_data", "Fingerprint data", cached=False, retried=True, object_store=True),
        Step("prepare_data", "Prepare data", retried=True, object_store=True),
        Step("train_teacher", "Teacher: fine-tune or import", pool="gpu", retried=True, object_store=True),
        Step("teacher_logits", "Teacher logits", pool="gpu"),
        Step("distill", "Distil student (trial)", pool="gpu"),
        Step("select_student", "Pick best student"),
        Step("prune_vocabulary", "Prune vocabulary"),
        Step("quantize_torch", "PyTorch dynamic INT8"),
        Step("export_onnx", "Export ONNX"),
        Step("optimize_onnx", "ORT graph optimization"),
        Step("quantize_ort_dynamic", "ORT INT8 dynamic"),
        Step("quantize_ort_static", "ORT INT8 static"),
        Step("prune", "Prune", pool="gpu"),
        Step("prune_structured", "Prune (structured)", pool="gpu"),
        # Timing is never cached: a benchmark measures the hardware now, not the inputs.
        Step("benchmark", "Benchmark", pool="benchmark", cached=False),
        Step(
            "benchmark_production",
            "Benchmark production (champion)",
            pool="benchmark",
            cached=False,
            retried=True,
            object_store=True,
        ),
        # The reference row (BERT-base's shape, random weights): timed in the same run as the candidates.
        Step("benchmark_reference", "Benchmark reference (BERT-base)", pool="benchmark", cached=False),
        Step("gate", "SLO gate", cached=False, object_store=True),
        Step("promote", "Promote to production", cached=False, retried=True, object_store=True),
    )
}


@dataclass(frozen=True)
class Candidate:
    """A model the gate judges, and the DAG task output that produces it.

    Attributes:
        name: The candidate's name: the gate's and promote's input, the benchmark's
            ``candidate``, the decision's and report's row.
        task: The key of the producing task in ``compression.py``'s ``tasks`` (a step's
            name, or ``<step>:<variant>`` where a step runs more than once).
        output: The producing task's output that holds the model artifact.
        what: One line for the KFP UI and the components' docstrings.
        per_trial: Made once per distillation trial inside the search's ParallelFor (the shape search):
            the gate and promote take the list (``dsl.Collected``) and name each
            ``<name>@<trial label>`` (``searched@L2-a0.5-T2-lr0.0002``).
    """

    name: str
    task: str
    output: str
    what: str
    per_trial: bool = False

    @property
    def step(self) -> str:
        """The step (component) whose task produces the model."""
        return self.task.split(":", 1)[0]


# In benchmark order: the teacher first (the baseline of every relative goal), then by path.
CANDIDATES: tuple[Candidate, ...] = (
    Candidate("teacher", "train_teacher", "model", "the fine-tuned (or imported) teacher: the baseline"),
    Candidate("student", "select_student", "best", "the distilled student, best trial"),
    Candidate("torch_int8", "quantize_torch", "out", "PyTorch dynamic INT8"),
    Candidate("onnx_fp32", "export_onnx", "out", "ONNX export, FP32"),
    Candidate("onnx_optimized", "optimize_onnx", "out", "ONNX Runtime graph-optimized (fused) FP32"),
    Candidate("ort_int8_dynamic", "quantize_ort_dynamic", "out", "ONNX Runtime dynamic INT8"),
    Candidate("ort_int8_static", "quantize_ort_static", "out", "ONNX Runtime static (calibrated) INT8"),
    Candidate("pruned_movement", "prune:movement", "pruned", "movement-pruned student (sparse storage)"),
    Candidate("pruned_magnitude", "prune:magnitude", "pruned", "magnitude-pruned student (sparse storage)"),
    Candidate("pruned_structured", "prune_structured", "pruned", "structurally pruned student (heads, FFN)"),
    Candidate("pruned_structured_onnx", "optimize_onnx:structured", "out", "structurally pruned student, ONNX, fused"),
    Candidate(
        "pruned_structured_int8",
        "quantize_ort_dynamic:structured",
        "out",
        "structurally pruned student as ONNX, graph-optimized, dynamic INT8",
    ),
    Candidate(
        "searched",
        "quantize_ort_dynamic:search",
        "out",
        "every shape-search trial's student as ONNX, graph-optimized, dynamic INT8 (one per trial)",
        per_trial=True,
    ),
)
CANDIDATE_NAMES: tuple[str, ...] = tuple(c.name for c in CANDIDATES)

assert len(set(CANDIDATE_NAMES)) == len(CANDIDATES), "candidate names must be unique"
assert all(c.step in STEPS for c in CANDIDATES), "every candidate's task must be a step of STEPS"


def display_name(task: str) -> str:
    """The KFP UI name of task ``<step>[:<variant>]`` (``prune:movement`` -> ``Prune (movement)``)."""
    step, _, variant = task.partition(":")
    base = STEPS[step].display
    return f"{base} ({variant})" if variant else base
