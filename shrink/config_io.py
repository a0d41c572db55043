"""Reading and writing typed configs: YAML files, plain mappings and dataclasses.

This is the generic half of configuration, kept below every module that defines
a config (``shrink/config.py``'s step sections, ``shrink/slo.py``'s gate) so that
those can import each other's types without a cycle. It knows dataclasses,
``X | None``, ``list[X]``, ``dict[str, X]``, ``Literal[...]`` and the scalar types,
which cover every config here, and nothing about any particular config.

Every failure is a ``ShrinkError`` naming where it happened: the file, then the
dotted key (``pipelines/configs/clinc150.yaml.distill.train.epochs: expected an
integer``). A config class may define ``check(self, where)`` for the value rules
(ranges, consistency) its types cannot express; ``from_dict`` calls it, and
``require`` is the one-line way to write such a rule.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from shrink import files
from shrink.errors import ShrinkError

T = TypeVar("T")


def require(ok: bool, where: str, message: str) -> None:
    """Raise ``ShrinkError("<where>: <message>")`` unless ``ok``: one value rule of a ``check`` method."""
    if not ok:
        raise ShrinkError(f"{where}: {message}")


def read_yaml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """Parse a YAML file that must hold a mapping (an empty file is an empty one).

    The one place a YAML file is read for a config, so every reader fails alike,
    with the file named first: ``<path>: <what> not found``, ``<path>: not valid
    YAML: <the parser's message, with line and column>``, or ``<path>: expected a
    mapping, got ...``.
    """
    path = Path(path)
    if not path.exists():  # a folder, permissions, encoding: the guarded reader's one-line errors
        raise ShrinkError(f"{path}: {what} not found")
    # The guarded reader: encoding, permissions and duplicate keys are one line naming the file.
    data = files.parse_yaml(files.read_text(path, what), path, "YAML") or {}
    if not isinstance(data, dict):
        raise ShrinkError(f"{path}: expected a mapping, got {type(data).__name__} {data!r}")
    return data


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
    data = read_yaml(path)
    if section is not None:
        data = data.get(section, {})
    return from_dict(cls, data, where=f"{path}" + (f":{section}" if section else ""))


def save_yaml(obj: Any, path: str | Path) -> Path:
    """Write a config next to the artifact it produced, so every artifact says how it was made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(obj), sort_keys=False))
    return path


def dumps(obj: Any) -> str:
    """Canonical JSON of a config, for fingerprints and KFP parameters."""
    return json.dumps(to_dict(obj) if dataclasses.is_dataclass(obj) else obj, sort_keys=True)
