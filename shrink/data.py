"""Labelled texts in, one canonical ``datasets.DatasetDict`` out.

Every later step relies on the same shape: ``train``, ``validation`` and
``test`` splits, a ``text`` column and a ``label`` column of type ``ClassLabel``
whose names are sorted. Sorted names make label ids stable across runs, machines
and data sources, which is what lets a teacher trained last month be checked
against today's data by name.
"""

from __future__ import annotations

import csv
import hashlib
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shrink.config import DataConfig
from shrink.errors import ShrinkError

SPLITS = ("train", "validation", "test")
INFO_FILE = "shrink-data.json"
OOS_LABEL = "oos"
_CLINC_FILES = {"plus": "data_oos_plus.json", "full": "data_full.json"}
_TEXT_COLUMNS = ("text", "utterance", "sentence", "query")
_LABEL_COLUMNS = ("label", "category", "intent", "labels")

Rows = dict[str, list[tuple[str, str]]]  # split -> [(text, label name)]


@dataclass
class DataInfo:
    """What a prepared dataset holds; saved next to it as ``shrink-data.json``."""

    source: str
    label_names: list[str]
    counts: dict[str, int]
    fingerprints: dict[str, str]
    # sha256 of the source's contents as read (shrink/fingerprint.py): what the cache keys downstream follow.
    source_fingerprint: str = ""

    @property
    def has_oos(self) -> bool:
        """Whether the data has an out-of-scope class (CLINC150 does, BANKING77 does not)."""
        return OOS_LABEL in self.label_names


def texts_fingerprint(texts: list[str]) -> str:
    """sha256 over the texts in order: detects logits or metrics reused on other data."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


# --------------------------------------------------------------------------- readers


def _label_name(label: Any, where: str) -> str:
    """A label as its class name: strings (stripped) and integers (as digits) are accepted, nothing else.

    A list, dict, float or bool label is refused rather than turned into a class name by ``str()``:
    ``[1, 2]`` or ``3.0`` as a class is always a mistake in the file, not a label.
    """
    if isinstance(label, bool) or not isinstance(label, str | int):
        kind = {bool: "a boolean", float: "a number with a fraction", list: "a list", dict: "an object"}.get(
            type(label), f"a {type(label).__name__}"
        )
        raise ShrinkError(f"{where}: label must be a string or an integer, got {kind}: {label!r}"[:300])
    name = str(label).strip()
    if not name:
        raise ShrinkError(f"{where}: row has no label")
    return name


def _check_row(text: Any, label: Any, where: str) -> tuple[str, str]:
    if text is not None and not isinstance(text, str):
        raise ShrinkError(f"{where}: text must be a string, got {type(text).__name__}: {text!r}"[:300])
    if not isinstance(text, str) or not text.strip():
        raise ShrinkError(f"{where}: row has no text")
    if label is None:
        raise ShrinkError(f"{where}: row has no label")
    return text.strip(), _label_name(label, where)


def _read_clinc(path: Path) -> Rows:
    """CLINC150 authors' JSON: in-scope and oos parts of each split merged, oos kept as a class."""
    from shrink import files

    raw = files.read_json(path, "CLINC150 JSON")
    if not isinstance(raw, dict):
        raise ShrinkError(f"{path}: expected a JSON object with train/val/test keys")
    rows: Rows = {}
    for split, keys in (
        ("train", ("train", "oos_train")),
        ("validation", ("val", "oos_val")),
        ("test", ("test", "oos_test")),
    ):
        if keys[0] not in raw:
            raise ShrinkError(f"{path}: missing the {keys[0]!r} split")
        rows[split] = []
        for key in keys:
            part = raw.get(key, [])
            if not isinstance(part, list):
                raise ShrinkError(f"{path}: {key!r} must be a list of [text, intent] pairs")
            for i, example in enumerate(part):
                where = f"{path}: {key}[{i}]"
                if not isinstance(example, list | tuple) or len(example) != 2:
                    raise ShrinkError(f"{where}: expected [text, intent], got {example!r}"[:300])
                rows[split].append(_check_row(example[0], example[1], where))
    return rows


def _sniff_columns(header: list[str], cfg: DataConfig, where: str) -> tuple[str, str]:
    def pick(given: str | None, candidates: tuple[str, ...], kind: str) -> str:
        if given:
            if given not in header:
                raise ShrinkError(f"{where}: no {kind} column {given!r} (columns: {header})")
            return given
        for name in candidates:
            if name in header:
                return name
        raise ShrinkError(f"{where}: cannot find a {kind} column (columns: {header}); set data.{kind}_column")

    return pick(cfg.text_column, _TEXT_COLUMNS, "text"), pick(cfg.label_column, _LABEL_COLUMNS, "label")


def _read_csv(path: Path, cfg: DataConfig) -> list[tuple[str, str]]:
    """One CSV file: UTF-8 with or without a byte-order mark, LF or CRLF; every row as wide as the header.

    Errors name the physical line (a quoted field may span lines), so the user can open the file there.
    """
    import io

    from shrink import files

    text = files.read_text(path, "CSV")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise ShrinkError(f"{path}: empty CSV (no header)")
        header = [h.strip() for h in header]
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise ShrinkError(f"{path}:1: column {dupes[0]!r} appears more than once in the header")
        text_col, label_col = _sniff_columns(header, cfg, str(path))
        ti, li = header.index(text_col), header.index(label_col)
        rows = []
        for fields in reader:
            where = f"{path}:{reader.line_num}"
            if not fields or (len(fields) == 1 and not fields[0].strip() and len(header) > 1):
                continue  # a blank line (often the last one)
            if len(fields) != len(header):
                raise ShrinkError(
                    f"{where}: {len(fields)} fields where the header has {len(header)} "
                    "(an unquoted comma in the text? quote the field)"
                )
            rows.append(_check_row(fields[ti], fields[li], where))
        return rows
    except csv.Error as exc:
        raise ShrinkError(f"{path}:{reader.line_num}: cannot read CSV: {exc}") from None


def _read_csv_dir(path: Path, cfg: DataConfig) -> Rows:
    files = {"train": path / "train.csv", "test": path / "test.csv"}
    for name in ("validation.csv", "val.csv", "dev.csv"):
        if (path / name).is_file():
            files["validation"] = path / name
            break
    missing = [str(f) for s, f in files.items() if not f.is_file()]
    if missing:
        raise ShrinkError(f"{missing[0]}: file not found (a CSV dataset directory needs train.csv and test.csv)")
    return {split: _read_csv(f, cfg) for split, f in files.items()}


def _from_hf_dataset(dd: Any, where: str, cfg: DataConfig) -> Rows:
    """Rows from a datasets.DatasetDict (hub or save_to_disk); ClassLabel ids become names."""
    from datasets import ClassLabel

    aliases = {
        "train": "train",
        "validation": "validation",
        "val": "validation",
        "dev": "validation",
        "test": "test",
    }
    rows: Rows = {}
    for name, ds in dd.items():
        split = aliases.get(name)
        if split is None:
            continue
        text_col, label_col = _sniff_columns(list(ds.column_names), cfg, f"{where} [{name}]")
        feature = ds.features[label_col]
        class_label = isinstance(feature, ClassLabel)
        rows[split] = [
            _check_row(t, feature.int2str(lab) if class_label and lab is not None else lab, f"{where} [{name}] row {i}")
            for i, (t, lab) in enumerate(zip(ds[text_col], ds[label_col], strict=True))
        ]
    if "train" not in rows or "test" not in rows:
        raise ShrinkError(f"{where}: needs train and test splits, found {sorted(dd.keys())}")
    return rows


def _read_source(source: str, cfg: DataConfig) -> Rows:
    from shrink import hub, storage

    if source.startswith("s3://"):
        local = storage.download_source(source)
        return _read_source(str(local), cfg)
    if hub.is_hub_id(source):
        hub.ensure_reachable(source)
        import datasets

        name, config = hub.dataset_ref(source)
        try:
            dd = datasets.load_dataset(name, config)
        except Exception as exc:  # noqa: BLE001 - the hub raises many types; the message is what matters
            raise ShrinkError(f"{source}: cannot load from the Hugging Face hub: {exc}".splitlines()[0]) from None
        return _from_hf_dataset(dd, source, cfg)
    path = Path(source)
    if not path.exists():
        raise ShrinkError(f"{path}: dataset not found")
    if path.is_dir():
        if (path / "dataset_dict.json").is_file():
            import datasets

            try:
                dd = datasets.load_from_disk(str(path))
            except Exception as exc:  # noqa: BLE001
                raise ShrinkError(f"{path}: cannot load saved dataset: {exc}".splitlines()[0]) from None
            return _from_hf_dataset(dd, str(path), cfg)
        clinc = path / _CLINC_FILES[cfg.clinc_variant]
        if clinc.is_file():
            return _read_clinc(clinc)
        if (path / "train.csv").exists():
            return _read_csv_dir(path, cfg)
        raise ShrinkError(
            f"{path}: not a dataset directory (expected {_CLINC_FILES[cfg.clinc_variant]}, train.csv/test.csv "
            "or a save_to_disk dataset_dict.json)"
        )
    if path.suffix == ".json":
        return _read_clinc(path)
    if path.suffix == ".csv":
        raise ShrinkError(f"{path}: give the directory holding train.csv and test.csv, not one CSV file")
    raise ShrinkError(f"{path}: unknown dataset file type {path.suffix!r} (expected .json or a directory)")


# --------------------------------------------------------------------------- canonical form


def _subsample(rows: list[tuple[str, str]], n: int, seed: int) -> list[tuple[str, str]]:
    """At most ``n`` examples per class, chosen by a seeded draw, original order kept."""
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, (_, label) in enumerate(rows):
        by_label[label].append(i)
    rng = random.Random(seed)
    keep = set()
    for label in sorted(by_label):
        idx = by_label[label]
        keep.update(idx if len(idx) <= n else rng.sample(idx, n))
    return [r for i, r in enumerate(rows) if i in keep]


def label_names(cfg: DataConfig) -> list[str]:
    """The class names ``load_dataset`` would give, read without building any dataset.

    For checks before the first step (:mod:`shrink.preflight`): the out-of-scope label of an
    explicitly enabled rule is looked up here in a second, not by the first benchmark an hour in.
    """
    return sorted({label for _, label in _selected_rows(cfg)["train"]})


def _selected_rows(cfg: DataConfig) -> Rows:
    """The source's rows, only those of ``data.labels`` when it lists some (each must be in the training split)."""
    rows = _read_source(cfg.source, cfg)
    if cfg.labels:
        wanted = set(cfg.labels)
        known = {label for _, label in rows["train"]}
        unknown = sorted(wanted - known)
        if unknown:
            raise ShrinkError(f"{cfg.source}: data.labels names labels not in the training split: {unknown[:5]}")
        rows = {s: [r for r in rs if r[1] in wanted] for s, rs in rows.items()}
    return rows


def load_dataset(cfg: DataConfig):
    """Turn a data spec into the canonical DatasetDict (``train``/``validation``/``test``)."""
    import datasets

    rows = _selected_rows(cfg)
    if cfg.max_per_class:
        rows = {s: _subsample(rs, cfg.max_per_class, cfg.seed) for s, rs in rows.items()}
    for split, rs in rows.items():
        if not rs:
            raise ShrinkError(f"{cfg.source}: the {split} split is empty")
    train_labels = {label for _, label in rows["train"]}
    for split in ("validation", "test"):
        absent = sorted({label for _, label in rows.get(split, [])} - train_labels)
        if absent:
            raise ShrinkError(f"{cfg.source}: {split} labels absent from train: {absent[:5]} ({len(absent)} in all)")
    if len(train_labels) < 2:
        raise ShrinkError(
            f"{cfg.source}: the training split has {len(train_labels)} class ({sorted(train_labels)}); "
            "a classifier needs at least two"
        )
    names = sorted(train_labels)
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    index = {n: i for i, n in enumerate(names)}

    def build(rs: list[tuple[str, str]]):
        return datasets.Dataset.from_dict(
            {"text": [t for t, _ in rs], "label": [index[lab] for _, lab in rs]}, features=features
        )

    dd = datasets.DatasetDict({split: build(rs) for split, rs in rows.items()})
    if "validation" not in dd:
        too_rare = [n for n, c in Counter(lab for _, lab in rows["train"]).items() if c < 2]
        if too_rare:
            raise ShrinkError(
                f"{cfg.source}: cannot carve a stratified validation split; labels with one example: {too_rare[:5]}"
            )
        carved = dd["train"].train_test_split(
            test_size=cfg.validation_fraction, stratify_by_column="label", seed=cfg.seed
        )
        dd = datasets.DatasetDict({"train": carved["train"], "validation": carved["test"], "test": dd["test"]})
    return datasets.DatasetDict({s: dd[s] for s in SPLITS})


def describe(dd, source: str) -> DataInfo:
    """Counts, label names and text fingerprints of a canonical DatasetDict."""
    return DataInfo(
        source=source,
        label_names=list(dd["train"].features["label"].names),
        counts={s: len(dd[s]) for s in SPLITS},
        fingerprints={s: texts_fingerprint(dd[s]["text"]) for s in SPLITS},
    )


def save_prepared(dd, out_dir: str | Path, source: str, source_fingerprint: str = "") -> DataInfo:
    """Write the dataset with ``save_to_disk`` plus ``shrink-data.json`` (the KFP Dataset artifact)."""
    from shrink import files

    out = Path(out_dir)
    with files.guarded(out, "write"):
        dd.save_to_disk(str(out))
    info = describe(dd, source)
    info.source_fingerprint = source_fingerprint
    files.write_json(out / INFO_FILE, info.__dict__)
    return info


def load_prepared(path: str | Path):
    """(DatasetDict, DataInfo) of a dataset written by :func:`save_prepared`."""
    import datasets

    path = Path(path)
    info_path = path / INFO_FILE
    if not info_path.is_file():
        raise ShrinkError(f"{path}: not a prepared dataset ({INFO_FILE} is missing)")
    from shrink import files

    raw = files.read_json(info_path)
    try:
        info = DataInfo(**raw)
        dd = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001
        raise ShrinkError(f"{path}: cannot load prepared dataset: {exc}".splitlines()[0]) from None
    if list(dd["train"].features["label"].names) != info.label_names:
        raise ShrinkError(f"{info_path}: label names disagree with the saved dataset")
    return dd, info


def prepare(cfg: DataConfig, out_dir: str | Path, expected_fingerprint: str | None = None) -> DataInfo:
    """Load, canonicalise and save: the data-preparation step in one call.

    The source's fingerprint is taken before it is read and recorded in ``shrink-data.json``.
    ``expected_fingerprint`` is the one the pipeline's ``fingerprint_data`` step took, which is
    in this step's cache key: if the data changed in between, this step's cache entry would
    name data it does not hold, so the run stops instead (running it again is the cure).
    """
    from shrink.fingerprint import fingerprint_source

    fingerprint = fingerprint_source(cfg.source).digest
    if expected_fingerprint and fingerprint != expected_fingerprint:
        raise ShrinkError(
            f"{cfg.source}: the data changed while the run started (fingerprint {expected_fingerprint[:12]} "
            f"became {fingerprint[:12]}); run again"
        )
    return save_prepared(load_dataset(cfg), out_dir, cfg.source, fingerprint)


def data_fingerprint(prepared_dir: str | Path) -> dict[str, str]:
    """What a decision or a model card records about the data it was made from.

    Returns ``{"source": ..., "fingerprint": ...}`` from a prepared dataset's ``shrink-data.json``
    (the fingerprint is empty for datasets prepared before fingerprints existed).
    """
    from shrink import files

    raw = files.read_json(Path(prepared_dir) / INFO_FILE)
    return {"source": str(raw.get("source", "")), "fingerprint": str(raw.get("source_fingerprint", ""))}
