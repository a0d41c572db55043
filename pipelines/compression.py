"""The compression DAG: prepare data, teacher, distillation search, INT8 / ONNX variants, benchmark, gate, promote.

    fingerprint_data -> prepare_data -> train_teacher -> teacher_logits -> ParallelFor(distill trials) -> select_student
        (a shape search, distill.search.depth with several depths: inside the ParallelFor, every trial's
         student -> export_onnx -> optimize_onnx -> quantize_ort_dynamic -> benchmark, candidate "searched")
        student -> prune_vocabulary (when vocabulary.enabled) -> quantize_torch
                   prune_vocabulary -> export_onnx -> optimize_onnx -> quantize_ort_dynamic
                   export_onnx -> quantize_ort_static   (static QDQ cannot see inside the fused ops)
        prune_vocabulary -> prune (movement) / prune_structured   (when prune.enabled)
                   prune_structured -> export_onnx -> optimize_onnx -> quantize_ort_dynamic
    every candidate, teacher included -> benchmark (one at a time) -> benchmark_reference -> benchmark_production
        -> gate -> promote
    (benchmark fits each candidate's out-of-scope rule first; promote takes its calibrated copy;
    benchmark_reference times BERT-base's shape for the "Nx faster" ratios; benchmark_production re-measures
    the model now in production, the champion, for champion/challenger)

The same function builds the pipeline for kfp.local and for a cluster; the config
fills the parameters' defaults (so a run started from the KFP UI form uses the
config's values unless changed) and the compile-time placement and images.
"""

from dataclasses import is_dataclass
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact

from components.benchmark.component import benchmark as benchmark_op
from components.benchmark_production.component import benchmark_production as benchmark_production_op
from components.benchmark_reference.component import benchmark_reference as benchmark_reference_op
from components.distill.component import distill as distill_op
from components.export_onnx.component import export_onnx as export_onnx_op
from components.fingerprint_data.component import fingerprint_data as fingerprint_data_op
from components.gate.component import gate as gate_op
from components.optimize_onnx.component import optimize_onnx as optimize_onnx_op
from components.prepare_data.component import prepare_data as prepare_data_op
from components.promote.component import promote as promote_op
from components.prune.component import prune as prune_op
from components.prune_structured.component import prune_structured as prune_structured_op
from components.prune_vocabulary.component import prune_vocabulary as prune_vocabulary_op
from components.quantize_ort_dynamic.component import quantize_ort_dynamic as quantize_ort_dynamic_op
from components.quantize_ort_static.component import quantize_ort_static as quantize_ort_static_op
from components.quantize_torch.component import quantize_torch as quantize_torch_op
from components.select_student.component import select_student as select_student_op
from components.teacher_logits.component import teacher_logits as teacher_logits_op
from components.train_teacher.component import train_teacher as train_teacher_op
from pipelines.images import image_for
from pipelines.object_store import use_object_store
from pipelines.placement import place
from pipelines.steps import CANDIDATES, STEPS, display_name
from shrink.config import PipelineConfig, to_dict
from shrink.slo import gate_config
from shrink.transient import BUDGET_ENV as TRANSIENT_BUDGET_ENV

TRANSIENT_BUDGET_S = 300  # how long a step marked ``retried`` keeps retrying a store or hub that does not answer


def _describe_candidates() -> None:
    """Give the gate's and promote's candidate inputs their KFP UI descriptions from the catalog.

    The component signatures list the candidates (KFP reads them statically); their docstrings
    describe them once, together, so the per-input text comes from ``Candidate.what`` here.
    """
    for op, kind in ((gate_op, "benchmark result"), (promote_op, "model")):
        for c in CANDIDATES:
            op.component_spec.inputs[c.name].description = f"The {kind} of {c.name}: {c.what}."


_describe_candidates()


def _param(obj):
    """A config section as a KFP parameter default.

    Protobuf Values cannot hold null; an omitted key takes the dataclass default when the
    component rebuilds the section.
    """
    if is_dataclass(obj):
        obj = to_dict(obj)
    if isinstance(obj, dict):
        return {k: _param(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_param(v) for v in obj]
    return obj


def _trial_section(distill) -> dict:
    """The ``distill`` section as the trials read it: without its ``search``.

    The search reaches the DAG as the ``trials`` parameter (one dict per trial) and, at compile time, as its
    shapes and selection tolerance; no trial reads it. Left in, a change to it (a selection tolerance, the
    parallelism) would change every trial's inputs, and kfp's cache would train every student again: with it
    in, make bench's second run distilled all eight trials again for a new tolerance (45 minutes).
    """
    section = _param(distill)
    section.pop("search", None)
    return section


def build_pipeline(cfg: PipelineConfig):
    """Return the KFP pipeline function for ``cfg`` (parameters default to the config's values)."""
    pools = {"gpu": cfg.placement.gpu, "cpu": cfg.placement.cpu, "benchmark": cfg.placement.benchmark}
    tasks: dict[str, dsl.PipelineTask] = {}

    def step(task: dsl.PipelineTask, key: str, display: str | None = None) -> dsl.PipelineTask:
        """Apply the catalog's settings for ``key`` (``<step>[:<variant>]``) and remember the task."""
        spec = STEPS[key.partition(":")[0]]
        task.set_display_name(display or display_name(key))
        task.set_container_image(image_for(spec.name, cfg.images))
        task.set_caching_options(enable_caching=spec.cached)
        if spec.object_store:
            use_object_store(task)
        if spec.retried:
            # Retried inside the step, transient errors only (shrink/transient.py): KFP's task retry
            # cannot tell them from bad input and would repeat every deterministic failure.
            task.set_env_variable(TRANSIENT_BUDGET_ENV, str(TRANSIENT_BUDGET_S))
        tasks[key] = task
        return place(task, pools[spec.pool])

    prune_methods = [m for m in cfg.prune.methods if m != "structured"] if cfg.prune.enabled else []
    # Compile-time, like the pruning methods: the search's shape comes from the config that compiles it.
    shapes = cfg.distill.search.shapes
    structured = cfg.prune.enabled and "structured" in cfg.prune.methods

    class Outputs(NamedTuple):
        decision: Artifact
        report: HTML
        chosen: str

    @dsl.pipeline(
        name=cfg.name,
        description=f"Compress the {cfg.model_name} classifier and promote the best model that meets the SLOs.",
    )
    def compression(
        data: dict = _param(cfg.data),
        teacher: dict = _param(cfg.teacher),
        distill: dict = _trial_section(cfg.distill),
        trials: list = cfg.distill.search.trials(),
        quantize: dict = _param(cfg.quantize),
        prune: dict = _param(cfg.prune),
        benchmark: dict = _param(cfg.benchmark),
        gate: dict = _param(cfg.gate),
        model_name: str = cfg.model_name,
        oos: dict = _param(cfg.oos),
        vocabulary: dict = _param(cfg.vocabulary),
    ) -> Outputs:
        """Distil, quantize, optimize and benchmark a classifier; promote the best one that meets the SLOs.

        Args:
            data: Data source and subset: CLINC150 JSON, CSV directory, hf:<id>, saved dataset or s3:// URI.
            teacher: Base encoder to fine-tune, or an already fine-tuned teacher checkpoint, and its training settings.
            distill: Student initialisation (layers kept from the teacher or a checkpoint) and training settings
                (the search is ``trials``).
            trials: Distillation trials, one dict of alpha, temperature and learning_rate per trial.
            quantize: ONNX opset, INT8 options (per-channel, embeddings, calibration) and runtime threads.
            prune: Pruning methods and target sparsity.
            benchmark: Warm-up, timed requests, batch sizes, threads, instance price.
            gate: SLOs, selection policy and model registry.
            model_name: Name of the model in the registry (s3://<bucket>/<model_name>/<version>/).
            oos: Out-of-scope rejection rule, tuned on the validation split and stored with every candidate.
            vocabulary: Vocabulary pruning of the student before export (sources, min_count, keep_fraction).
        """
        # Uncached: the data's fingerprint, not its source, decides whether prepare_data (and all after it) is reused.
        fingerprint = step(fingerprint_data_op(data=data), "fingerprint_data").output
        prep = step(prepare_data_op(data=data, fingerprint=fingerprint), "prepare_data")
        dataset = prep.outputs["dataset"]
        teacher_model = step(train_teacher_op(dataset=dataset, teacher=teacher), "train_teacher").outputs["model"]
        logits = step(
            teacher_logits_op(dataset=dataset, teacher=teacher_model, distill=distill), "teacher_logits"
        ).outputs["logits"]
        with dsl.ParallelFor(items=trials, parallelism=cfg.distill.search.parallelism, name="distill-trials") as trial:
            trial_task = step(
                distill_op(dataset=dataset, teacher=teacher_model, logits=logits, distill=distill, trial=trial),
                "distill",
            )
            if shapes:
                # Every shape goes down the fastest path and is measured, so the gate chooses among shapes by
                # its policy (accuracy alone, select_student's criterion, would always pick the deepest).
                # Iterations run one at a time locally; on a cluster each benchmark gets its own benchmark node.
                s_student = trial_task.outputs["student"]
                if cfg.vocabulary.enabled:
                    s_student = step(
                        prune_vocabulary_op(model=s_student, dataset=dataset, vocabulary=vocabulary),
                        "prune_vocabulary:search",
                    ).outputs["out"]
                s_onnx = step(
                    export_onnx_op(model=s_student, quantize=quantize, dataset=dataset),
                    "export_onnx:search",
                )
                s_opt = step(optimize_onnx_op(model=s_onnx.outputs["out"], quantize=quantize), "optimize_onnx:search")
                s_int8 = step(
                    quantize_ort_dynamic_op(model=s_opt.outputs["out"], quantize=quantize),
                    "quantize_ort_dynamic:search",
                )
                s_bench = step(
                    benchmark_op(
                        model=s_int8.outputs["out"],
                        dataset=dataset,
                        benchmark=benchmark,
                        candidate="searched",
                        trial=trial,
                        oos=oos,
                    ),
                    "benchmark:searched",
                    f"{STEPS['benchmark'].display} searched",
                )
        select = step(
            select_student_op(
                students=dsl.Collected(trial_task.outputs["student"]),
                tolerance=cfg.distill.search.select_tolerance,
            ),
            "select_student",
        )
        student = select.outputs["best"]
        # The INT8 / ONNX paths start from the student with its vocabulary cut to the domain's word pieces.
        small = student
        if cfg.vocabulary.enabled:
            small = step(
                prune_vocabulary_op(model=student, dataset=dataset, vocabulary=vocabulary), "prune_vocabulary"
            ).outputs["out"]

        step(quantize_torch_op(model=small, quantize=quantize), "quantize_torch")
        onnx = step(export_onnx_op(model=small, quantize=quantize, dataset=dataset), "export_onnx")
        opt = step(optimize_onnx_op(model=onnx.outputs["out"], quantize=quantize), "optimize_onnx")
        step(quantize_ort_dynamic_op(model=opt.outputs["out"], quantize=quantize), "quantize_ort_dynamic")
        # Static QDQ from the plain export: calibration cannot see inside the fused ops.
        step(
            quantize_ort_static_op(model=onnx.outputs["out"], quantize=quantize, dataset=dataset),
            "quantize_ort_static",
        )
        # Pruning starts from the same small-vocabulary student: the weights it removes are the encoder's, the
        # rows vocabulary pruning removes are the embeddings', and the sizes add up (docs/pruning.md).
        for method in prune_methods:
            step(
                prune_op(dataset=dataset, teacher=teacher_model, student=small, prune=prune, method=method),
                f"prune:{method}",
            )
        if structured:
            ps = step(
                prune_structured_op(dataset=dataset, teacher=teacher_model, student=small, prune=prune),
                "prune_structured",
            )
            # A structurally pruned model is a smaller dense one: it takes the student's fastest path too.
            ps_onnx = step(
                export_onnx_op(model=ps.outputs["pruned"], quantize=quantize, dataset=dataset),
                "export_onnx:structured",
            )
            ps_opt = step(optimize_onnx_op(model=ps_onnx.outputs["out"], quantize=quantize), "optimize_onnx:structured")
            step(
                quantize_ort_dynamic_op(model=ps_opt.outputs["out"], quantize=quantize),
                "quantize_ort_dynamic:structured",
            )
        models = {c.name: tasks[c.task].outputs[c.output] for c in CANDIDATES if c.task in tasks and not c.per_trial}

        # Benchmarks run one after another: candidates never share cores while being timed (the search's own
        # benchmarks ran inside its loop, before select_student). Each benchmark fits the candidate's oos rule
        # first; its calibrated copy is what promote may publish.
        results, calibrated, previous = {}, {}, (select if shapes else None)
        for name, model in models.items():
            bench = step(
                benchmark_op(model=model, dataset=dataset, benchmark=benchmark, candidate=name, oos=oos),
                f"benchmark:{name}",
                f"{STEPS['benchmark'].display} {name}",
            )
            if previous is not None:
                bench.after(previous)
            results[name], previous = bench.outputs["result"], bench
            calibrated[name] = bench.outputs["calibrated"]

        gate_inputs = dict(results)
        if shapes:
            gate_inputs["searched"] = dsl.Collected(s_bench.outputs["result"])
            calibrated["searched"] = dsl.Collected(s_bench.outputs["calibrated"])
        if cfg.benchmark.reference:
            # BERT-base's shape timed on the same nodes in the same hour: "Nx faster" is a ratio from one run.
            reference = step(
                benchmark_reference_op(teacher=teacher_model, dataset=dataset, benchmark=benchmark),
                "benchmark_reference",
            )
            reference.after(previous)
            gate_inputs["reference"], previous = reference.outputs["result"], reference
        if gate_config(cfg.gate, "gate").compare_to_production:
            # The champion, timed on the same nodes in the same hour as the challengers (after them, never beside).
            champion = step(
                benchmark_production_op(dataset=dataset, benchmark=benchmark, gate=gate, model_name=model_name),
                "benchmark_production",
            )
            champion.after(previous)
            gate_inputs["production"] = champion.outputs["result"]
        decision = step(gate_op(gate=gate, model_name=model_name, **gate_inputs), "gate")
        step(
            promote_op(decision=decision.outputs["decision"], gate=gate, model_name=model_name, **calibrated),
            "promote",
        )
        return Outputs(
            decision=decision.outputs["decision"],
            report=decision.outputs["report"],
            chosen=decision.outputs["Output"],
        )

    return compression


def compile_pipeline(cfg: PipelineConfig, output: str) -> str:
    """Write the KFP IR YAML for ``cfg``; the file loads back with ``kfp.components.load_component_from_file``."""
    from kfp import compiler

    compiler.Compiler().compile(build_pipeline(cfg), package_path=output)
    return output
